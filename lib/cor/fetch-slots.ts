// A counting semaphore with two priorities: guest reads/writes always go before background fill.
export type Priority = 'guest' | 'background';

export class FetchSlots {
  private active = 0;
  private readonly waiting: Record<Priority, Array<() => void>> = { guest: [], background: [] };

  constructor(private readonly limit: number) {}

  async acquire(priority: Priority): Promise<() => void> {
    if (this.active < this.limit && this.waiting.guest.length === 0 && (priority === 'guest' || this.waiting.background.length === 0)) {
      this.active++;
      return this.releaser();
    }
    await new Promise<void>((resolve) => this.waiting[priority].push(resolve));
    return this.releaser();
  }

  get guestWaiting(): number {
    return this.waiting.guest.length;
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.guest.shift() ?? this.waiting.background.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else this.active--;
    };
  }
}
