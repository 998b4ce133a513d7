// What the copy-on-read layer knows about zero blocks: which blocks are all zeros in the image
// (never fetched, kept as holes), and which present blocks this process knows still read as zeros.
import { Bitset } from '../map/bitset.js';
import type { BlockMap } from '../map/block-map.js';
import { zeroBlockFlags, type Manifest } from '../repo/manifest-format.js';

export class ZeroBlocks {
  private readonly imageZero: Uint8Array;
  /**
   * Present blocks this process knows still read as zeros: image zero blocks made present without
   * a write (a hole answer, a fetch that skipped them). Any guest change clears the bit. Reads of
   * them need no pread (the kernel would zero-fill page-cache pages for a hole), and block status
   * can call them zero. Not persisted: after a restart they read from the disk like any block.
   */
  private readonly presentZero: Bitset;

  constructor(private readonly manifest: Manifest, private readonly map: BlockMap) {
    this.imageZero = zeroBlockFlags(manifest);
    this.presentZero = new Bitset(manifest.blockCount);
  }

  /** Block b is all zeros in the image. */
  inImage(block: number): boolean {
    return this.imageZero[block] === 1;
  }

  /** Bytes of image data in block b: 0 for a zero block; the last block may be short. */
  dataBytes(block: number): number {
    if (this.imageZero[block] === 1) return 0;
    const { blockSize, size } = this.manifest;
    return Math.min(blockSize, size - block * blockSize);
  }

  isPresentZero(block: number): boolean {
    return this.presentZero.get(block);
  }

  markPresentZero(first: number, count: number): void {
    this.presentZero.setRange(first, count);
  }

  /** The guest changed [first, first + count): no longer known to be zero. */
  forget(first: number, count: number): void {
    this.presentZero.clearRange(first, count);
  }

  /**
   * Whether the local disk still has holes at blocks [first, end): on a disk created sparse with
   * its map, a block no guest ever wrote (no W) was never written at all.
   */
  stillHoles(first: number, end: number): boolean {
    if (!this.map.header.diskCreatedSparse) return false;
    for (let b = first; b < end; b++) if (this.map.isModified(b)) return false;
    return true;
  }
}
