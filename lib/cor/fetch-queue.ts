// The fetch queue of the copy-on-read layer: runs of absent blocks wait here for one of a few
// upstream slots, and when a slot frees up, the oldest run is merged with every queued run adjacent
// to it (up to the largest fetch) into ONE upstream request. So many small parallel reads of a
// region (a guest, nbdcopy, a readahead) become few large fetches. Guest runs go before fill runs.
export type Priority = 'guest' | 'background';

interface QueuedRun {
  readonly start: number;
  readonly count: number;
  readonly priority: Priority;
  resolve(): void;
  reject(error: unknown): void;
}

/** Fetches [start, start+count) upstream, stores it locally and marks it present. */
export type FetchRange = (start: number, count: number) => Promise<void>;

export class FetchQueue {
  private readonly waiting: Record<Priority, Set<QueuedRun>> = { guest: new Set(), background: new Set() };
  private readonly byStart = new Map<number, QueuedRun>();
  private readonly byEnd = new Map<number, QueuedRun>();
  private inFlight = 0;

  constructor(private readonly fetchRange: FetchRange, private readonly maxInFlight: number, private readonly maxBlocks: number) {}

  /** Queues a run (its blocks must be claimed by the caller); resolves when it is present. */
  enqueue(start: number, count: number, priority: Priority): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const run: QueuedRun = { start, count, priority, resolve, reject };
      this.waiting[priority].add(run);
      this.byStart.set(start, run);
      this.byEnd.set(start + count - 1, run);
      this.dispatch();
    });
  }

  /** Guest runs waiting for a slot. */
  get guestWaiting(): number {
    return this.waiting.guest.size;
  }

  private dispatch(): void {
    while (this.inFlight < this.maxInFlight) {
      const first = this.oldest();
      if (!first) return;
      const batch = this.coalesce(first);
      const start = batch[0]!.start;
      const last = batch[batch.length - 1]!;
      this.inFlight++;
      this.fetchRange(start, last.start + last.count - start).then(
        () => { for (const run of batch) run.resolve(); },
        (error) => { for (const run of batch) run.reject(error); },
      ).finally(() => {
        this.inFlight--;
        this.dispatch();
      });
    }
  }

  private oldest(): QueuedRun | undefined {
    for (const priority of ['guest', 'background'] as const) {
      for (const run of this.waiting[priority]) return run;
    }
    return undefined;
  }

  /** Takes `first` and its queued neighbours on both sides, in block order, within maxBlocks. */
  private coalesce(first: QueuedRun): QueuedRun[] {
    this.take(first);
    const batch = [first];
    let blocks = first.count;
    for (;;) {
      const head = batch[0]!;
      const tail = batch[batch.length - 1]!;
      const next = this.byStart.get(tail.start + tail.count);
      if (next && blocks + next.count <= this.maxBlocks) {
        this.take(next);
        batch.push(next);
        blocks += next.count;
        continue;
      }
      const previous = this.byEnd.get(head.start - 1);
      if (previous && blocks + previous.count <= this.maxBlocks) {
        this.take(previous);
        batch.unshift(previous);
        blocks += previous.count;
        continue;
      }
      return batch;
    }
  }

  private take(run: QueuedRun): void {
    this.waiting[run.priority].delete(run);
    this.byStart.delete(run.start);
    this.byEnd.delete(run.start + run.count - 1);
  }
}
