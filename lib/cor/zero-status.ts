// What the copy-on-read device reports as zeros without reading them: block status for clients
// copying the disk (qemu-img convert, nbdcopy, a QEMU block job skip zeros without a fetch) and
// the holes the NBD server answers instead of reading (knownZeroRanges). Absent zero blocks of the
// image read as zeros (holes of a disk created sparse with its map), and so do present blocks
// known to be still zero. Everything else is data: a present block is not known to be zero (the
// guest may have written it, and W clear does not prove otherwise).
import type { Extent } from '../block/backend.js';
import type { BlockMap } from '../map/block-map.js';
import { zeroBlockRanges } from '../block/read-into.js';
import type { BlockClaims } from './block-claims.js';
import type { ZeroBlocks } from './zero-blocks.js';

export interface ZeroStatusParts {
  readonly size: number;
  readonly blockSize: number;
  readonly map: BlockMap;
  readonly claims: BlockClaims;
  readonly zeros: ZeroBlocks;
}

/** Bound on the work one blockStatus call does (clients ask about the whole rest of the disk). */
const MAX_EXTENTS_PER_CALL = 32;

export class ZeroStatus {
  constructor(private readonly parts: ZeroStatusParts) {}

  /**
   * The zero ranges of [offset, offset + length): absent zero blocks become present here without
   * any I/O (the disk's hole already equals the image), so they are answered as holes from now on.
   */
  knownZeroRanges(offset: number, length: number): Array<readonly [number, number]> {
    const { blockSize, size, map, zeros } = this.parts;
    return zeroBlockRanges(offset, length, blockSize, size, (b) => {
      if (zeros.isPresentZero(b)) return true;
      if (!this.readsAsZeroUnfetched(b)) return false;
      map.markPresent(b, 1);
      zeros.markPresentZero(b, 1);
      return true;
    });
  }

  /** Extents of [offset, offset + length): zero (and a hole) or data, at most MAX_EXTENTS_PER_CALL. */
  blockStatus(offset: number, length: number): Extent[] {
    const { blockSize, size } = this.parts;
    const end = Math.min(offset + length, size);
    const extents: Extent[] = [];
    let at = offset;
    while (at < end && extents.length < MAX_EXTENTS_PER_CALL) {
      let block = Math.floor(at / blockSize);
      const zero = this.readsAsZero(block);
      while ((block + 1) * blockSize < end && this.readsAsZero(block + 1) === zero) block++;
      const to = Math.min(end, (block + 1) * blockSize);
      extents.push({ offset: at, length: to - at, hole: zero, zero });
      at = to;
    }
    return extents;
  }

  private readsAsZeroUnfetched(block: number): boolean {
    const { map, claims, zeros } = this.parts;
    return zeros.inImage(block) && !map.isPresent(block) && !claims.isClaimed(block) && zeros.stillHoles(block, block + 1);
  }

  private readsAsZero(block: number): boolean {
    return this.parts.zeros.isPresentZero(block) || this.readsAsZeroUnfetched(block);
  }
}
