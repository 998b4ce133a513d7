// Sequential readahead for the copy-on-read layer: a read that misses right after blocks that are
// present or already being fetched looks like a sequential stream (firmware, kernel, a copy), so
// the next absent blocks are fetched too, as one large request, before anyone asks for them.
// Random reads (the block before is absent) trigger nothing.
export class Readahead {
  constructor(private readonly windowBlocks: number, private readonly blockCount: number) {}

  /** The inclusive range to prefetch after a miss on [first, last], or undefined. */
  after(first: number, last: number, presentOrBusy: (block: number) => boolean): [number, number] | undefined {
    if (this.windowBlocks <= 0 || first === 0 || !presentOrBusy(first - 1)) return undefined;
    const start = last + 1;
    const end = Math.min(this.blockCount - 1, last + this.windowBlocks);
    return start <= end ? [start, end] : undefined;
  }
}
