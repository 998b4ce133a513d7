// Fetch-ahead into memory for the copy-on-read layer: when a guest reads sequentially (a miss right
// after blocks that are present or being fetched), the next blocks are fetched upstream (verified)
// into memory only. Nothing is written locally and no block is marked present: a later fetch of
// those blocks takes its data from here instead of a round trip. So a guest with few requests in
// flight still gets large, early fetches, and "only blocks the guest read are present" still holds.
// Reusing the data is always correct: it is verified image content, and it only ever fills blocks
// that are absent (a block the guest wrote is present and never fetched again).
// Memory: a run holds its fetched buffer (shared-buffers.ts) while it is in the window; take()
// gives the caller a hold of its own, which the caller releases with releaseShared when done. A
// dropped run gives its hold back, so the buffer is reused instead of waiting for a full GC.
import { releaseShared, retainShared } from '../fetch/shared-buffers.js';

interface AheadRun {
  readonly from: number;
  readonly to: number;          // exclusive
  readonly data: Promise<Buffer | undefined>;  // undefined: the fetch failed (fall back upstream)
  /** take() calls still awaiting `data`: the run's own hold is kept until they have theirs. */
  takersWaiting: number;
  /** No longer in `runs`; its hold is dropped once no take() waits. */
  dropped: boolean;
  released: boolean;
}

export interface FetchAheadOptions {
  /** Blocks kept fetched ahead of a sequential reader (0 = off). */
  readonly windowBlocks: number;
  /** Fetch at least this many blocks at a time (a window is refilled in large pieces). */
  readonly minBlocks: number;
  readonly blockCount: number;
  /** Verified read of blocks [from, to) from the repositories. */
  readonly fetch: (from: number, to: number) => Promise<Buffer>;
}

/** Runs kept at once (several sequential readers); the oldest is dropped beyond this. */
const MAX_RUNS = 8;

export class FetchAhead {
  private runs: AheadRun[] = [];

  constructor(private readonly options: FetchAheadOptions) {}

  /**
   * After a guest miss on [first, last]: tops up the window after `last` if the read looks
   * sequential. `wanted(b)` says whether block b still needs data (absent and not being fetched).
   */
  afterMiss(first: number, last: number, sequential: boolean, wanted: (block: number) => boolean): void {
    const { windowBlocks, minBlocks, blockCount } = this.options;
    if (windowBlocks <= 0 || !sequential) return;
    const windowEnd = Math.min(blockCount, last + 1 + windowBlocks);
    let from = last + 1;
    for (const run of this.runs) if (run.from <= from && run.to > from) from = run.to;
    while (from < windowEnd && !wanted(from)) from++;
    if (from >= windowEnd) return;
    let to = Math.min(blockCount, Math.max(windowEnd, from + minBlocks));
    if (to - from < minBlocks && to < blockCount) return;
    // No trailing blocks that need nothing (zero blocks of a sparse image); one block alone is
    // left to the guest's own fetch.
    while (to > from && !wanted(to - 1)) to--;
    if (to - from < 2 || this.overlaps(from, to)) return;
    this.dropBefore(first);
    if (this.runs.length >= MAX_RUNS) this.drop(this.runs.shift()!);
    const run: AheadRun = { from, to, data: this.options.fetch(from, to).catch(() => undefined), takersWaiting: 0, dropped: false, released: false };
    this.runs.push(run);
    void run.data.then((data) => { if (!data) this.remove(run); });
  }

  /**
   * The fetched-ahead bytes of blocks [from, to) if one run holds them all (awaits a running fetch),
   * with a hold of the caller's own: releaseShared(result) once nothing uses it any more.
   */
  async take(from: number, to: number, blockSize: number): Promise<Buffer | undefined> {
    const run = this.runs.find((r) => r.from <= from && r.to >= to);
    if (!run) return undefined;
    run.takersWaiting++;
    let data: Buffer | undefined;
    try {
      data = await run.data;
      if (data) retainShared(data);
    } finally {
      run.takersWaiting--;
      this.releaseIfUnused(run);
    }
    if (!data) return undefined;
    const at = (from - run.from) * blockSize;
    return data.subarray(at, Math.min(at + (to - from) * blockSize, data.length));
  }

  /**
   * Where runs start or end strictly inside [from, to): a fetch cut there takes each piece from
   * one run (take() serves a range only if one run holds all of it).
   */
  cutsWithin(from: number, to: number): number[] {
    const cuts = new Set<number>();
    for (const run of this.runs) {
      if (run.from > from && run.from < to) cuts.add(run.from);
      if (run.to > from && run.to < to) cuts.add(run.to);
    }
    return [...cuts].sort((a, b) => a - b);
  }

  /** Forgets runs wholly before `block` (the reader has moved past them). */
  dropBefore(block: number): void {
    const keep = block - this.options.windowBlocks;
    for (const run of this.runs) if (run.to <= keep) this.drop(run);
    this.runs = this.runs.filter((r) => r.to > keep);
  }

  private drop(run: AheadRun): void {
    run.dropped = true;
    this.releaseIfUnused(run);
  }

  /** Gives the run's own hold back once it is out of the window and no take() still waits for it. */
  private releaseIfUnused(run: AheadRun): void {
    if (!run.dropped || run.takersWaiting > 0 || run.released) return;
    run.released = true;
    void run.data.then((data) => { if (data) releaseShared(data); });
  }

  private overlaps(from: number, to: number): boolean {
    return this.runs.some((r) => r.from < to && r.to > from);
  }

  private remove(run: AheadRun): void {
    this.runs = this.runs.filter((r) => r !== run);
    this.drop(run);
  }
}
