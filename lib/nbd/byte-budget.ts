// A count of bytes held at once, with waiting: reserve() resolves once the bytes fit, in order of
// arrival, so a big reservation is not starved by a stream of small ones. One reservation larger
// than the whole budget is granted alone (nothing else held), so no request is refused for size.
export class ByteBudget {
  private held = 0;
  private readonly waiting: Array<{ bytes: number; resolve: () => void }> = [];

  constructor(readonly limitBytes: number) {}

  /** Bytes reserved and not yet released. */
  get heldBytes(): number {
    return this.held;
  }

  /** Resolves when `bytes` are reserved; give them back with release(). */
  reserve(bytes: number): Promise<void> {
    if (this.waiting.length === 0 && this.fits(bytes)) {
      this.held += bytes;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => this.waiting.push({ bytes, resolve }));
  }

  release(bytes: number): void {
    this.held -= bytes;
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.bytes)) {
      const next = this.waiting.shift()!;
      this.held += next.bytes; // reserved now, so the next waiter sees it
      next.resolve();
    }
  }

  private fits(bytes: number): boolean {
    return this.held === 0 || this.held + bytes <= this.limitBytes;
  }
}
