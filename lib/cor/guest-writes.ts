// Guest writes to the copy-on-read device (write, write zeroes, trim as zeroes): a partially
// covered absent block gets its old content first; the absent blocks written are claimed (so no
// fetch stores the image's bytes over the guest's); rule 2 of lib/map/block-map.ts holds here:
// the W-intent is durable before the data write is issued. Then the written blocks are present.
import type { WriteOptions } from '../block/backend.js';
import type { BlockMap } from '../map/block-map.js';
import type { BlockClaims } from './block-claims.js';
import type { ZeroBlocks } from './zero-blocks.js';

export interface GuestWriteParts {
  readonly size: number;
  readonly blockSize: number;
  readonly map: BlockMap;
  readonly claims: BlockClaims;
  readonly zeros: ZeroBlocks;
  /** Makes block `block` present with the image's content (a partial write keeps the rest of it). */
  needOldContent(block: number): Promise<void>;
  /** Blocks [first, last] are about to be overwritten (fetch ahead and the trace recorder note it). */
  overwriting(first: number, last: number): void;
  /** The write of blocks [first, last] ended (also a failed one: its bytes may have landed in part). */
  landed(first: number, last: number): void;
}

export class GuestWrites {
  constructor(private readonly parts: GuestWriteParts) {}

  /** Writes [offset, offset + length) (length > 0) by `apply`, keeping map and claims right. */
  async write(offset: number, length: number, apply: () => Promise<void>, options?: WriteOptions): Promise<void> {
    const { blockSize, map, claims, zeros } = this.parts;
    const first = Math.floor(offset / blockSize);
    const last = Math.floor((offset + length - 1) / blockSize);
    // Partially covered absent blocks need their old content first (head / tail).
    const partial = [first, last].filter((b, i, all) => all.indexOf(b) === i && !this.coversBlock(offset, length, b));
    for (const block of partial) await this.parts.needOldContent(block);
    this.parts.overwriting(first, last);
    // Wait out fetches on the blocks we overwrite, then claim the absent ones synchronously.
    for (;;) {
      const pending = claims.firstHolder(first, last);
      if (!pending) break;
      await pending.catch(() => undefined);
    }
    const claimed: number[] = [];
    for (let b = first; b <= last; b++) if (!map.isPresent(b)) claimed.push(b);
    let done!: () => void;
    const writing = new Promise<void>((resolve) => { done = resolve; });
    for (const b of claimed) claims.claim(b, 1, writing);
    // No fetched segment overlaps [first, last] now: its blocks stay claimed until stored, and the
    // store drops it from the fresh segments before the wait above can end.
    zeros.forget(first, last - first + 1);
    try {
      // Rule 2: the W-intent is durable before the data write is issued.
      if (map.markModified(first, last - first + 1)) await map.commit();
      await apply();
      for (const b of claimed) map.markPresent(b, 1);
    } finally {
      // Also after a failed write: its bytes may have landed in part.
      this.parts.landed(first, last);
      for (const b of claimed) claims.release(b, 1, writing);
      done();
    }
    if (options?.fua) await map.commit();
  }

  /** Whole blocks are zeroed (no fetch); partial head/tail are left alone, as TRIM allows. */
  trimmedRange(offset: number, length: number): [number, number] | undefined {
    const { blockSize, size } = this.parts;
    const start = Math.ceil(offset / blockSize) * blockSize;
    const end = offset + length >= size ? size : Math.floor((offset + length) / blockSize) * blockSize;
    return end > start ? [start, end - start] : undefined;
  }

  private coversBlock(offset: number, length: number, block: number): boolean {
    const start = block * this.parts.blockSize;
    const end = Math.min(start + this.parts.blockSize, this.parts.size);
    return offset <= start && offset + length >= end;
  }
}
