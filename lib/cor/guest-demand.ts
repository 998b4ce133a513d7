// What the guest needed from the image: the image data blocks whose content it read, or partially
// overwrote (the rest of such a block had to come from the image). Each counts once. This is the
// yardstick of fetch-ahead's budget (fetch-ahead.ts) and of "fetch only what the guest needs":
// bytes fetched are compared with these bytes. Blocks the guest wrote before reading them do not
// count (their image content was never needed), nor do all-zero blocks (they are never fetched).
import { Bitset } from '../map/bitset.js';

export class GuestDemand {
  private readonly demanded: Bitset;
  private bytes = 0;

  constructor(
    blockCount: number,
    /** Bytes of image data in block b (0 for an all-zero block). */
    private readonly dataBytes: (block: number) => number,
    /** Whether the guest has written block b (its image content no longer matters). */
    private readonly written: (block: number) => boolean,
  ) {
    this.demanded = new Bitset(blockCount);
  }

  /** Bytes of image data the guest has needed so far. */
  get demandedBytes(): number {
    return this.bytes;
  }

  /** The guest needs the image content of blocks [first, last]. */
  need(first: number, last: number): void {
    for (let b = first; b <= last; b++) {
      if (this.demanded.get(b)) continue;
      const bytes = this.dataBytes(b);
      if (bytes === 0 || this.written(b)) continue;
      this.demanded.set(b);
      this.bytes += bytes;
    }
  }
}
