// The fetch queue of the copy-on-read layer: runs of absent blocks wait here for one of a few
// upstream slots, and when a slot frees up, the oldest run is merged with every queued run adjacent
// to it (up to the largest fetch) into ONE upstream request. So many small parallel reads of a
// region (a guest, nbdcopy, a fetch-ahead) become few large fetches. Guest runs go first, then
// runs fetched ahead of the guest, then fill runs; a run fetched ahead that a guest read comes to
// wait for is promoted to a guest run.
// Runs separated by a few blocks that need no fetch (present zero blocks) merge too: the fetch
// reads those blocks along (as holes or zeros) and stores nothing for them.
// Runs queued together (together()) merge before they take a slot. Under a deep queue of guest
// requests (a bulk copy), new runs wait for the end of the event-loop turn before they take a free
// slot, so the requests that arrived together merge first.
export type Priority = 'guest' | 'ahead' | 'background';
const PRIORITIES: readonly Priority[] = ['guest', 'ahead', 'background'];

interface QueuedRun {
  readonly start: number;
  readonly count: number;
  priority: Priority;
  resolve(): void;
  reject(error: unknown): void;
}

/**
 * Fetches [start, start+count) upstream, stores it locally and marks it present. `speculative`:
 * every run in it was fetched ahead (no guest waits for it yet).
 */
export type FetchRange = (start: number, count: number, speculative: boolean) => Promise<void>;

/** Whether a block between two queued runs may be fetched along with them (it is never stored). */
export type Bridgeable = (block: number) => boolean;

/**
 * Longest gap of zero blocks read along inside one request rather than splitting it (one more round
 * trip costs more than reading 512 KiB of zeros at 64 KiB blocks): between queued runs here, and
 * between data blocks of one run in the copy-on-read layer.
 */
export const MAX_ZERO_GAP_BLOCKS = 8;

export interface FetchQueueOptions {
  /** Upstream requests at once. */
  readonly maxInFlight: number;
  /** Largest merged request, in blocks. */
  readonly maxBlocks: number;
  readonly bridgeable?: Bridgeable;
  /**
   * Whether a new run should wait for the end of this turn (while other fetches run) to merge with
   * the runs queued after it. Measured on nbdcopy's 4 × 64 requests: ~140 of ~250 fetches were
   * 1-2 blocks without it, and the cold read took ~16% longer. Not for a reader with few requests
   * in flight: measured slower there (65 → 107 fetches: merged guest requests spanned two
   * fetched-ahead runs and went upstream; CorBackend.fetchRun now cuts at run edges, but this
   * was not measured again).
   */
  readonly holdForTurn?: () => boolean;
}

export class FetchQueue {
  private readonly waiting: Record<Priority, Set<QueuedRun>> = { guest: new Set(), ahead: new Set(), background: new Set() };
  private readonly byStart = new Map<number, QueuedRun>();
  private readonly byEnd = new Map<number, QueuedRun>();
  private inFlight = 0;
  private dispatchHeld = false;
  /** Inside together(): enqueue does not dispatch. */
  private holding = 0;

  constructor(private readonly fetchRange: FetchRange, private readonly options: FetchQueueOptions) {}

  /** Queues a run (its blocks must be claimed by the caller); resolves when it is present. */
  enqueue(start: number, count: number, priority: Priority): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const run: QueuedRun = { start, count, priority, resolve, reject };
      this.waiting[priority].add(run);
      this.byStart.set(start, run);
      this.byEnd.set(start + count - 1, run);
      this.dispatchSoon();
    });
  }

  /** Guest runs waiting for a slot. */
  get guestWaiting(): number {
    return this.waiting.guest.size;
  }

  /** A guest now waits for `block`: a queued run fetched ahead that holds it goes with the guest's. */
  promote(block: number): void {
    if (this.waiting.ahead.size === 0) return;
    for (const run of this.waiting.ahead) {
      if (block < run.start || block >= run.start + run.count) continue;
      this.waiting.ahead.delete(run);
      run.priority = 'guest';
      this.waiting.guest.add(run);
      return;
    }
  }

  /**
   * Runs `enqueueing` (which queues several runs) and only then looks for free slots, so its runs
   * merge with each other first (the absent runs of one read, split by present zero blocks).
   */
  together<T>(enqueueing: () => T): T {
    this.holding++;
    try {
      return enqueueing();
    } finally {
      this.holding--;
      this.dispatchSoon();
    }
  }

  private dispatchSoon(): void {
    if (this.holding > 0 || this.dispatchHeld) return;
    if (this.inFlight === 0 || !this.options.holdForTurn?.()) {
      this.dispatch();
      return;
    }
    this.dispatchHeld = true;
    setImmediate(() => {
      this.dispatchHeld = false;
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.inFlight < this.options.maxInFlight) {
      const first = this.oldest();
      if (!first) return;
      const batch = this.coalesce(first);
      const start = batch[0]!.start;
      const last = batch[batch.length - 1]!;
      this.inFlight++;
      const speculative = batch.every((run) => run.priority === 'ahead');
      this.fetchRange(start, last.start + last.count - start, speculative).then(
        () => { for (const run of batch) run.resolve(); },
        (error) => { for (const run of batch) run.reject(error); },
      ).finally(() => {
        this.inFlight--;
        this.dispatch();
      });
    }
  }

  private oldest(): QueuedRun | undefined {
    for (const priority of PRIORITIES) {
      for (const run of this.waiting[priority]) return run;
    }
    return undefined;
  }

  /** Takes `first` and its queued neighbours on both sides, in block order, within maxBlocks. */
  private coalesce(first: QueuedRun): QueuedRun[] {
    this.take(first);
    const batch = [first];
    let start = first.start;
    let end = first.start + first.count;
    for (;;) {
      const next = this.nextAfter(end);
      if (next && next.start + next.count - start <= this.options.maxBlocks) {
        this.take(next);
        batch.push(next);
        end = next.start + next.count;
        continue;
      }
      const previous = this.previousBefore(start);
      if (previous && end - previous.start <= this.options.maxBlocks) {
        this.take(previous);
        batch.unshift(previous);
        start = previous.start;
        continue;
      }
      return batch;
    }
  }

  /** The queued run starting at `end`, or after a short gap of bridgeable blocks. */
  private nextAfter(end: number): QueuedRun | undefined {
    for (let at = end, gap = 0; gap <= MAX_ZERO_GAP_BLOCKS; at++, gap++) {
      const run = this.byStart.get(at);
      if (run) return run;
      if (!this.options.bridgeable?.(at)) return undefined;
    }
    return undefined;
  }

  /** The queued run ending just before `start`, or before a short gap of bridgeable blocks. */
  private previousBefore(start: number): QueuedRun | undefined {
    for (let at = start - 1, gap = 0; gap <= MAX_ZERO_GAP_BLOCKS && at >= 0; at--, gap++) {
      const run = this.byEnd.get(at);
      if (run) return run;
      if (!this.options.bridgeable?.(at)) return undefined;
    }
    return undefined;
  }

  private take(run: QueuedRun): void {
    this.waiting[run.priority].delete(run);
    this.byStart.delete(run.start);
    this.byEnd.delete(run.start + run.count - 1);
  }
}
