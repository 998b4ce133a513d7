// `nativeSnapshot()`: a point-in-time snapshot of a running VM's disk after the pivot, when QEMU
// writes the disk itself. It covers both phases: the blocks the guest wrote before the pivot are the
// map's W bits for the target (unchanged since: the COR device only reads through); the blocks
// written since are QEMU's writes bitmap. QEMU's own fleecing (vmm/native-fleece.ts) fixes the
// instant: with the guest's file systems frozen for it, one QMP transaction moves the writes bitmap
// into a frozen one and starts a copy-before-write backup into an overlay; then the guest is
// thawed. The frozen bitmap's blocks (read over the overlay's NBD export, qemu:dirty-bitmap) join
// the W bits in the durable in-flight set, and every block is read from that export, so all of
// them are as of the instant. Shipping is snapshot.ts's `ship` (dedup, commit, marks cleared).
// On failure the frozen bitmap goes back into QEMU's writes bitmap and the W bits back into the map;
// the map also gets the frozen blocks for every target, so no mark is lost even when QEMU went away.
// On success the other targets of the map get the frozen blocks (QEMU's one writes bitmap served
// them all, and it was cleared for this target's snapshot).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockMap } from '../map/block-map.js';
import type { Bitset } from '../map/bitset.js';
import type { LocalDisk } from '../cor/local-disk.js';
import { mapPathOf } from '../cor/device.js';
import { NbdClient } from '../nbd/client.js';
import { validateImageName } from '../repo/image-name.js';
import type { WriteTarget } from '../repo/write-target.js';
import { canonicalWriteUri, openWriteTarget } from '../write/open-write-target.js';
import type { NativeFleece } from '../../vmm/native-fleece.js';
import { dirtyBlocksOverNbd } from '../pivot/dirty-bitmap-extents.js';
import { sendingSetPath } from './sending-set.js';
import { bindTarget } from './bind-target.js';
import { recoverLeftover, ship, type SnapshotInstant } from './snapshot.js';
import { whileFrozen } from './guest-freeze.js';
import type { LiveSnapshotOptions, LiveSnapshotResult } from './live-snapshot.js';

/** The running disk after the pivot: its map (nobody else writes it then) and QEMU's fleecing. */
export interface NativeDisk {
  readonly path: string;
  readonly map: BlockMap;
  /** The local raw disk, for snapshot.ts's reads of a disk at rest (unused here: all reads go to the export). */
  readonly local: LocalDisk;
  /** Prepares QEMU's fleecing in `dir` (TransientVm.prepareFleece). */
  readonly prepareFleece: (options: { dir: string; size: number; blockSize: number }) => Promise<NativeFleece>;
}

export async function nativeSnapshot(disk: NativeDisk, options: LiveSnapshotOptions): Promise<LiveSnapshotResult> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  validateImageName(options.as);
  const canonical = canonicalWriteUri(options.to);
  const { map, local } = disk;
  const { size, blockSize, blockCount } = map.header;
  const timing = { frozenFilesystems: 0, frozenMs: 0, freezeMs: 0, writesHeldMs: 0 };
  let target: WriteTarget | undefined;
  let fleece: NativeFleece | undefined;
  let reader: NbdClient | undefined;
  let written: Bitset | undefined;
  let committed = false;
  let copiedBytes = 0;
  const scratch = await mkdtemp(path.join(tmpdir(), 'lazyboot-snapshot-'));
  try {
    const sendingPath = sendingSetPath(mapPathOf(disk.path));
    const leftover = await recoverLeftover(map, sendingPath, log);
    target = await openWriteTarget(options.to, options);
    // No guest write reaches the map after the pivot: a new target is bound without holding anything.
    const label = await bindTarget(map, target, canonical, log);
    fleece = await disk.prepareFleece({ dir: scratch, size, blockSize });
    const view = fleece;
    const instant: SnapshotInstant = {
      at: async (fix) => {
        await whileFrozen(options.freezer, timing, async () => {
          timing.writesHeldMs = await view.fix();
        });
        const exported = await view.exportIt();
        reader = await NbdClient.connect({ socketPath: exported.socketPath, exportName: exported.exportName });
        written = await dirtyBlocksOverNbd(exported.socketPath, exported.exportName, exported.bitmap, { blockSize, blockCount });
        await fix(written);
      },
      read: (first, count) => {
        const start = first * blockSize;
        return reader!.read(start, Math.min(count * blockSize, size - start));
      },
    };
    const result = await ship({
      map, local, target, label, canonical, sendingPath, leftover: leftover?.target === label ? leftover : undefined,
      options: { ...options, disk: disk.path }, instant,
    });
    committed = true;
    // QEMU's writes bitmap no longer holds these blocks: the map's other targets keep them.
    if (written) {
      remarkOthers(map, label, written);
      await map.commit();
    }
    copiedBytes = await fleece.copiedBytes();
    return {
      ...result, recoveredMarks: leftover?.merged ?? 0, seconds: (performance.now() - started) / 1000,
      consistency: options.freezer ? 'frozen' : 'crash-consistent', graph: 'native', ...timing,
      copiedBeforeWrite: Math.ceil(copiedBytes / blockSize), copiedBytes, peakHeldBytes: copiedBytes,
    };
  } catch (error) {
    // ship() put the target's marks back; the frozen blocks go to every target too, in case QEMU
    // cannot take them back into its writes bitmap (close(true) below tries that as well).
    if (written && !committed) {
      remarkOthers(map, undefined, written);
      await map.commit().catch((failure: Error) => log(`${disk.path}: marks kept in QEMU only: ${failure.message}`));
    }
    throw error;
  } finally {
    await reader?.close().catch(() => undefined);
    await fleece?.close(!committed).catch((error: Error) => log(`the snapshot's QEMU fleecing was not torn down cleanly: ${error.message}`));
    await target?.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Sets `blocks` in the W bits of every target but `except`. */
function remarkOthers(map: BlockMap, except: string | undefined, blocks: Bitset): void {
  map.header.targets.forEach((label, index) => {
    if (label !== except) map.remarkModified(index, blocks);
  });
}
