// The COR device's read path after the pivot, when it is the *backing* of QEMU's native graph
// (a qcow2 over the local disk, vmm/qcow2-metadata.ts). The single-writer rule holds from then on:
// QEMU is the only writer of the local disk. So this path never writes the disk and never changes
// the map: present blocks are read from the local disk, absent zero blocks are zeros from memory,
// absent data blocks are fetched (verified by the upstream) and returned, not stored — QEMU's
// copy-on-read filter (or its block-stream job) writes them into the qcow2's data file, which is
// the local disk, at their own offset. CorBackend enters this mode (enterReadThrough) and refuses
// every write there; this file holds the mode (the gate CorBackend asks) and is the one reader.
//
// Why the rule: once QEMU has written a cluster (a guest write after the pivot), a store of the
// image's block at the same offset by this device (a fetch finishing, a fetch ahead, the fill)
// would overwrite the guest's data without anyone noticing. test/cor-read-through.test.ts breaks
// the rule on purpose and shows exactly that.
import { BlockError, type BlockBackend } from '../block/backend.js';
import type { BlockMap } from '../map/block-map.js';
import type { LocalDisk } from './local-disk.js';
import type { ZeroBlocks } from './zero-blocks.js';

export interface ReadThroughParts {
  readonly size: number;
  readonly blockSize: number;
  readonly map: BlockMap;
  readonly local: LocalDisk;
  /** Verified reads of the image (failover over the repositories). */
  readonly upstream: BlockBackend;
  readonly zeros: ZeroBlocks;
}

/** Largest single upstream request (as the store path's fetch runs). */
const MAX_FETCH_BYTES = 4 * 1024 * 1024;

type Kind = 'present' | 'zero' | 'fetch';

export class ReadThrough {
  /** Upstream requests and bytes fetched in this mode (never stored). */
  readonly counters = { fetchRequests: 0, fetchedBytes: 0, failedFetches: 0 };
  /**
   * Once entered (after the pivot, QEMU's native graph has the local disk), the backend never
   * writes the disk or the map: reads come here (fetched, verified, returned, not stored); guest
   * writes, fetch ahead, trace replay and ensurePresent (the fill) are refused. It never goes back.
   */
  private entered = false;

  constructor(private readonly parts: ReadThroughParts) {}

  /** True from enter() on: the backend serves as the native graph's read-only backing. */
  get active(): boolean {
    return this.entered;
  }

  /** Switches to read-through, for good. */
  enter(): void {
    this.entered = true;
  }

  /** The error for something that would write the disk or the map while read-through. */
  refusal(what: string): BlockError {
    return new BlockError('EPERM', `cannot ${what}: the copy-on-read device is read-through (after the pivot QEMU is the only writer of the local disk)`);
  }

  /** Fills `target` with the disk's bytes from `offset`: local where present, else the image's. */
  async readInto(offset: number, target: Buffer): Promise<void> {
    const { blockSize } = this.parts;
    const end = offset + target.length;
    const pieces: Promise<void>[] = [];
    let at = offset;
    while (at < end) {
      const kind = this.kindOf(Math.floor(at / blockSize));
      let to = Math.min(end, (Math.floor(at / blockSize) + 1) * blockSize);
      while (to < end && this.kindOf(Math.floor(to / blockSize)) === kind && (kind !== 'fetch' || to - at < MAX_FETCH_BYTES)) {
        to = Math.min(end, to + blockSize);
      }
      pieces.push(this.readRun(kind, at, target.subarray(at - offset, to - offset)));
      at = to;
    }
    await Promise.all(pieces);
  }

  private kindOf(block: number): Kind {
    if (this.parts.map.isPresent(block)) return 'present';
    return this.parts.zeros.inImage(block) ? 'zero' : 'fetch';
  }

  private async readRun(kind: Kind, offset: number, target: Buffer): Promise<void> {
    if (kind === 'present') return this.parts.local.readInto(offset, target);
    if (kind === 'zero') return void target.fill(0);
    // The upstream verifies whole blocks: ask for the blocks around the range, copy the range.
    const { blockSize, size, upstream } = this.parts;
    const from = Math.floor(offset / blockSize) * blockSize;
    const to = Math.min(size, Math.ceil((offset + target.length) / blockSize) * blockSize);
    this.counters.fetchRequests++;
    try {
      const data = await upstream.read(from, to - from);
      this.counters.fetchedBytes += to - from;
      data.copy(target, 0, offset - from, offset - from + target.length);
    } catch (error) {
      this.counters.failedFetches++;
      throw error instanceof BlockError ? error : new BlockError('EIO', (error as Error).message, { cause: error });
    }
  }
}
