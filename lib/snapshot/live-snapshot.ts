// `liveSnapshot()`: a point-in-time snapshot of a disk a running guest is writing through its
// copy-on-read device (before any pivot). The instant: the guest's file systems are frozen through
// its agent (guest-fsfreeze-freeze), the device holds new writes and lets the ones under way end,
// the block set is fixed (the W bits move to the durable in-flight set, as in snapshot.ts) and
// copy-before-write is installed (copy-before-write.ts); then writes go on and the guest is thawed
// at once. The guest is frozen for the few milliseconds of that step, not for the transfer: blocks
// it rewrites before they were sent are copied first, and its writes set fresh W bits for the next
// snapshot. Without an agent (`freezer` absent) the snapshot is crash-consistent: the same instant,
// without the file systems' cooperation.
// After a pivot QEMU writes the disk itself, past this device: that snapshot is native-snapshot.ts
// (QEMU's own fleecing); here it is refused (LiveSnapshotAfterPivot), and a pivot during the
// snapshot fails it, with every mark put back.
import { performance } from 'node:perf_hooks';
import type { BlockMap } from '../map/block-map.js';
import type { LocalDisk } from '../cor/local-disk.js';
import type { CorBackend } from '../cor/cor-backend.js';
import { mapPathOf } from '../cor/device.js';
import { validateImageName } from '../repo/image-name.js';
import type { WriteTarget } from '../repo/write-target.js';
import { canonicalWriteUri, openWriteTarget } from '../write/open-write-target.js';
import { sendingSetPath } from './sending-set.js';
import { bindTarget } from './bind-target.js';
import { CopyBeforeWrite } from './copy-before-write.js';
import { recoverLeftover, ship, type SnapshotInstant, type SnapshotOptions, type SnapshotResult } from './snapshot.js';
import { LiveSnapshotAfterPivot, LiveSnapshotBusy } from './errors.js';
import { whileFrozen, type GuestFreezer } from './guest-freeze.js';

/** The running disk: what its copy-on-read device holds open. */
export interface LiveDisk {
  readonly path: string;
  readonly map: BlockMap;
  readonly local: LocalDisk;
  readonly backend: CorBackend;
}

export type { GuestFreezer } from './guest-freeze.js';

export interface LiveSnapshotOptions extends Omit<SnapshotOptions, 'disk'> {
  /** Freezes the guest's file systems for the instant; without it the snapshot is crash-consistent. */
  readonly freezer?: GuestFreezer;
}

export interface LiveSnapshotResult extends SnapshotResult {
  /** frozen: the file systems were frozen at the instant; crash-consistent: no agent to ask. */
  readonly consistency: 'frozen' | 'crash-consistent';
  /** File systems the agent froze (0 when crash-consistent). */
  readonly frozenFilesystems: number;
  /** From the freeze's answer to the thaw's answer: how long the guest could not write (0 without a freeze). */
  readonly frozenMs: number;
  /** How long the freeze request itself took (the guest syncs its file systems first). */
  readonly freezeMs: number;
  /** How long the device held the guest's writes at the instant. */
  readonly writesHeldMs: number;
  /** Blocks the guest rewrote before they were sent, copied first; their bytes, and the most held at once. */
  readonly copiedBeforeWrite: number;
  readonly copiedBytes: number;
  readonly peakHeldBytes: number;
  /**
   * transient: before the pivot, through the COR device (its copies held in memory); native: after
   * it, through QEMU's fleecing (native-snapshot.ts: writesHeldMs is its transaction, the copies are
   * QEMU's, in a temp overlay file).
   */
  readonly graph: 'transient' | 'native';
}

/** Disks with a live snapshot under way (one at a time per disk). */
const busy = new WeakSet<CorBackend>();

export async function liveSnapshot(disk: LiveDisk, options: LiveSnapshotOptions): Promise<LiveSnapshotResult> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  validateImageName(options.as);
  const canonical = canonicalWriteUri(options.to);
  const { map, local, backend } = disk;
  if (backend.isReadThrough) throw new LiveSnapshotAfterPivot(disk.path, false);
  if (busy.has(backend)) throw new LiveSnapshotBusy(disk.path);
  busy.add(backend);
  let target: WriteTarget | undefined;
  let copies: CopyBeforeWrite | undefined;
  let unguard: (() => void) | undefined;
  const timing = { frozenFilesystems: 0, frozenMs: 0, freezeMs: 0, writesHeldMs: 0 };
  try {
    const sendingPath = sendingSetPath(mapPathOf(disk.path));
    const leftover = await recoverLeftover(map, sendingPath, log);
    target = await openWriteTarget(options.to, options);
    const label = await bindLive(map, backend, target, canonical, log);
    const instant: SnapshotInstant = {
      at: async (fix) => {
        await whileFrozen(options.freezer, timing, async () => {
          const release = await backend.holdWrites();
          const heldAt = performance.now();
          try {
            const fixed = await fix();
            if (backend.isReadThrough) throw new LiveSnapshotAfterPivot(disk.path, true);
            copies = new CopyBeforeWrite(local, map.header.blockSize, fixed);
            unguard = backend.guardOverwrites(copies.guard);
          } finally {
            release();
            timing.writesHeldMs = performance.now() - heldAt;
          }
        });
      },
      read: async (first, count) => {
        const data = await copies!.read(first, count);
        // QEMU writes the disk past the device from the pivot on: what we read may be newer.
        if (backend.isReadThrough) throw new LiveSnapshotAfterPivot(disk.path, true);
        return data;
      },
    };
    const result = await ship({
      map, local, target, label, canonical, sendingPath, leftover: leftover?.target === label ? leftover : undefined,
      options: { ...options, disk: disk.path }, instant,
    });
    const stats = copies!.stats;
    return {
      ...result, recoveredMarks: leftover?.merged ?? 0, seconds: (performance.now() - started) / 1000,
      consistency: options.freezer ? 'frozen' : 'crash-consistent', graph: 'transient', ...timing,
      copiedBeforeWrite: stats.copiedBlocks, copiedBytes: stats.copiedBytes, peakHeldBytes: stats.peakHeldBytes,
    };
  } finally {
    unguard?.();
    copies?.release();
    await target?.close();
    busy.delete(backend);
  }
}

/**
 * The map's target for the repository; binding a new one rewrites the map, so the device's writes
 * are held meanwhile (a write landing during the rewrite would miss the new target's W bits).
 */
async function bindLive(map: BlockMap, backend: CorBackend, target: WriteTarget, canonical: string, log: (line: string) => void): Promise<string> {
  const bound = map.header.targets.find((label) => map.shippingOf(label)?.uri === canonical);
  if (bound) return bound;
  const release = await backend.holdWrites();
  try {
    return await bindTarget(map, target, canonical, log);
  } finally {
    release();
  }
}
