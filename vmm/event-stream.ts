// A replayable stream of a VM's events: listeners get every event as it happens, and
// `for await` over it replays from the first event and ends when the stream is closed.

export class EventStream<T> implements AsyncIterable<T> {
  readonly #history: T[] = [];
  readonly #listeners = new Set<(event: T) => void>();
  readonly #wakers = new Set<() => void>();
  #ended = false;

  emit(event: T): void {
    if (this.#ended) return;
    this.#history.push(event);
    for (const listener of [...this.#listeners]) listener(event);
    this.#wake();
  }

  /** Calls `listener` for each future event; returns the unsubscribe function. */
  on(listener: (event: T) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Every event so far. */
  get history(): readonly T[] {
    return this.#history;
  }

  end(): void {
    this.#ended = true;
    this.#wake();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    let index = 0;
    for (;;) {
      while (index < this.#history.length) yield this.#history[index++]!;
      if (this.#ended) return;
      await new Promise<void>((resolve) => this.#wakers.add(resolve));
    }
  }

  #wake(): void {
    for (const wake of [...this.#wakers]) wake();
    this.#wakers.clear();
  }
}
