// How long the guest waited on the repository: the time during which at least one guest read
// was waiting for a fetch (overlapping waits count once). On a local disk this is zero, so it is
// what a lazy boot adds to a boot's time when the guest blocks on its disk; unlike a boot's wall
// time it hardly moves with the host's CPU load (the link sets it), which makes it the figure to
// compare fetch policies by (bench-boot reports it beside the times).
export class GuestWaitClock {
  private waiting = 0;
  private since = 0;
  private totalMs = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Milliseconds the guest has waited on fetches so far (a wait under way included). */
  get waitedMs(): number {
    return this.totalMs + (this.waiting > 0 ? this.now() - this.since : 0);
  }

  /** Runs `wait` (a guest read waiting for its fetch) on the clock. */
  async time<T>(wait: Promise<T>): Promise<T> {
    if (this.waiting++ === 0) this.since = this.now();
    try {
      return await wait;
    } finally {
      if (--this.waiting === 0) this.totalMs += this.now() - this.since;
    }
  }
}
