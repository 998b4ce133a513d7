// Guest activity of the copy-on-read layer: how many guest requests are running, so that the
// fetch policies can tell a shallow reader from a bulk copy, and the background fill can wait
// until the guest is idle.
export class GuestActivity {
  private running = 0;
  private idleWaiters: Array<() => void> = [];

  /** @param waiting guest work queued elsewhere that also counts as activity (queued fetches). */
  constructor(private readonly waiting: () => number = () => 0) {}

  /** Guest requests running now. */
  get requests(): number {
    return this.running;
  }

  /** Running and queued guest work; the fill waits for zero. */
  get active(): number {
    return this.running + this.waiting();
  }

  /** Runs one guest request, counted while it runs. */
  async run<T>(body: () => Promise<T>): Promise<T> {
    this.running++;
    try {
      return await body();
    } finally {
      this.running--;
      if (this.active === 0) this.wakeIdleWaiters();
    }
  }

  /** Resolves when no guest request is running or queued. */
  whenIdle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdleWaiters(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }
}
