// Fetched data kept in memory until it is stored (store-after-reply): runs just fetched and
// verified are readable from here at once, so the guest reads that waited for them are answered
// before the local write (which then overlaps the client's next request) and without reading the
// local disk back. A segment stays here exactly while its blocks are claimed for their store.
import { Bitset } from '../map/bitset.js';

export interface FetchedSegment {
  readonly from: number;
  readonly to: number;       // exclusive
  readonly data: Buffer;     // the image's bytes of blocks [from, to)
}

export class FreshSegments {
  private segments: FetchedSegment[] = [];
  /** Blocks of the segments held here. */
  private readonly unstored: Bitset;

  constructor(blockCount: number, private readonly blockSize: number) {
    this.unstored = new Bitset(blockCount);
  }

  add(segments: readonly FetchedSegment[]): void {
    this.segments.push(...segments);
    for (const segment of segments) this.unstored.setRange(segment.from, segment.to - segment.from);
  }

  /** The segments were stored (or failed to be): their blocks read from the disk (or are absent) again. */
  remove(segments: readonly FetchedSegment[]): void {
    for (const segment of segments) this.unstored.clearRange(segment.from, segment.to - segment.from);
    this.segments = this.segments.filter((segment) => !segments.includes(segment));
  }

  /** Whether block b is fetched and verified but not stored yet. */
  holds(block: number): boolean {
    return this.unstored.get(block);
  }

  /** The segment holding block b, if any. */
  segmentOf(block: number): FetchedSegment | undefined {
    return this.unstored.get(block) ? this.segments.find((s) => s.from <= block && block < s.to) : undefined;
  }

  /** The bytes [offset, offset + length) if one segment covers them wholly. */
  covering(offset: number, length: number): Buffer | undefined {
    const end = offset + length;
    for (const segment of this.segments) {
      const start = segment.from * this.blockSize;
      if (start <= offset && start + segment.data.length >= end) return segment.data.subarray(offset - start, end - start);
    }
    return undefined;
  }

  /**
   * Fills `target` (from `offset`) when every block in it is present or held here: held blocks
   * from their segment, the others (present) through `readLocal`, adjacent ones in one read.
   */
  async readAcross(offset: number, target: Buffer, readLocal: (offset: number, target: Buffer) => Promise<void>): Promise<void> {
    const end = offset + target.length;
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((end - 1) / this.blockSize);
    const fromDisk: Array<[number, number]> = [];
    for (let b = first; b <= last; b++) {
      const from = Math.max(offset, b * this.blockSize);
      const to = Math.min(end, (b + 1) * this.blockSize);
      const segment = this.segmentOf(b);
      if (segment) {
        const segmentStart = segment.from * this.blockSize;
        segment.data.copy(target, from - offset, from - segmentStart, to - segmentStart);
        continue;
      }
      const previous = fromDisk[fromDisk.length - 1];
      if (previous && previous[1] === from) previous[1] = to;
      else fromDisk.push([from, to]);
    }
    for (const [from, to] of fromDisk) await readLocal(from, target.subarray(from - offset, to - offset));
  }
}
