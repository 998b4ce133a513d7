// Synchronous file I/O for page-cache hits. Reading or writing the page cache is a memcpy, much
// cheaper than the thread-pool round trip of async fs calls (two context switches per call). A
// synchronous call that takes long means the disk (or writeback throttling) was involved and the
// event loop stalled: then the guard refuses synchronous I/O for a while, so the loop stalls for
// at most a couple of slow calls.
//
// Two slow calls in a row trip it, not one: on a shared host a single page-cache copy is now and
// then slow because the thread lost its CPU mid-call (measured on a 2-core VM: 1-5 calls of
// 0.5-3.7 ms among ~1,500 per cold 256 MiB read). With a trip on any slow call, each of those
// turned the next second of reads async: 85-90% of a cold read's disk reads went through the
// thread pool, and the device used ~15% more CPU. A disk that really is involved makes every call
// slow, so the second one trips it. The refusal lasts FIRST_BACKOFF_MS, then one call probes
// again; a probe that is slow again doubles the wait (up to MAX_BACKOFF_MS), a fast call resets it.
const SLOW_CALLS_TO_TRIP = 2;
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2000;

export interface SyncIoGuardClock {
  /** Milliseconds, for the refusal periods. */
  readonly now: () => number;
  /** Nanoseconds, to time each call. */
  readonly hrtime: () => bigint;
}

const SYSTEM_CLOCK: SyncIoGuardClock = { now: () => Date.now(), hrtime: () => process.hrtime.bigint() };

export class SyncIoGuard {
  private asyncOnlyUntil = 0;
  private slowInARow = 0;
  private backoffMs = FIRST_BACKOFF_MS;

  constructor(private readonly slowNs: bigint, private readonly clock: SyncIoGuardClock = SYSTEM_CLOCK) {}

  /** Runs `io` now unless synchronous calls were slow recently; else undefined (do it async). */
  run<T>(io: () => T): T | undefined {
    if (this.asyncOnlyUntil !== 0) {
      if (this.clock.now() < this.asyncOnlyUntil) return undefined;
      this.asyncOnlyUntil = 0;
    }
    const started = this.clock.hrtime();
    try {
      return io();
    } finally {
      this.timed(this.clock.hrtime() - started);
    }
  }

  private timed(tookNs: bigint): void {
    if (tookNs <= this.slowNs) {
      this.slowInARow = 0;
      this.backoffMs = FIRST_BACKOFF_MS;
      return;
    }
    if (++this.slowInARow < SLOW_CALLS_TO_TRIP) return;
    this.asyncOnlyUntil = this.clock.now() + this.backoffMs;
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    // The first call after the refusal is a probe: slow again, and it trips at once.
    this.slowInARow = SLOW_CALLS_TO_TRIP - 1;
  }
}
