// Synchronous file I/O for page-cache hits. Reading or writing the page cache is a memcpy, much
// cheaper than the thread-pool round trip of async fs calls (two context switches per call). A
// synchronous call that takes long means the disk (or writeback throttling) was involved and the
// event loop stalled: after one, the guard refuses synchronous I/O for a while, so the loop never
// stalls for more than one slow call.
export class SyncIoGuard {
  private asyncOnlyUntil = 0;

  constructor(private readonly slowNs: bigint, private readonly asyncForMs = 1000) {}

  /** Runs `io` now if no synchronous call was slow recently; else undefined (do it async). */
  run<T>(io: () => T): T | undefined {
    if (this.asyncOnlyUntil !== 0 && Date.now() < this.asyncOnlyUntil) return undefined;
    this.asyncOnlyUntil = 0;
    const started = process.hrtime.bigint();
    try {
      return io();
    } finally {
      if (process.hrtime.bigint() - started > this.slowNs) this.asyncOnlyUntil = Date.now() + this.asyncForMs;
    }
  }
}
