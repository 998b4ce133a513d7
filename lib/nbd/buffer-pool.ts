// Reusable reply buffers with a per-process byte budget. Allocating a fresh buffer per read request
// costs more in page faults and garbage collection than the read itself at high request rates, so
// buffers are recycled (power-of-two sizes; when the pool is full, the size with the most idle
// bytes gives way). The budget bounds the bytes handed out at once: a request beyond it waits for
// a buffer to come back (backpressure) instead of growing the process with every request a client
// queues (nbdcopy keeps 4 × 64 in flight). Idle buffers are dropped after a quiet spell, so an idle
// server stays small.
const SMALLEST = 4096;
/** Idle buffers are given back to the system after this long without a request. */
const RELEASE_IDLE_MS = 2_000;

export interface BufferPoolLimits {
  /** Bytes of idle buffers kept for reuse. */
  readonly maxPooledBytes?: number;
  /** Bytes handed out at once across every connection; more waits (one request may exceed it alone). */
  readonly budgetBytes?: number;
}

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private pooledBytes = 0;
  private outstandingBytes = 0;
  private readonly waiting: Array<{ size: number; resolve: () => void }> = [];
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly maxPooledBytes: number;
  private readonly budgetBytes: number;

  constructor(limits: BufferPoolLimits = {}) {
    this.maxPooledBytes = limits.maxPooledBytes ?? 8 * 1024 * 1024;
    this.budgetBytes = limits.budgetBytes ?? 8 * 1024 * 1024;
  }

  /**
   * A buffer of at least `length` bytes (use `.subarray(0, length)`), once the budget has room;
   * give it back with give(), or with abandon() if it cannot be reused (still being written).
   */
  async take(length: number): Promise<Buffer> {
    const size = sizeClass(length);
    // First come, first served: a big request is not starved by a stream of small ones.
    if (this.waiting.length > 0 || !this.fits(size)) {
      await new Promise<void>((resolve) => this.waiting.push({ size, resolve })); // release() reserves
    } else {
      this.outstandingBytes += size;
    }
    const buffer = this.free.get(size)?.pop();
    if (buffer) {
      this.pooledBytes -= size;
      return buffer;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  give(buffer: Buffer): void {
    this.release(buffer.length);
    const size = buffer.length;
    if (size !== sizeClass(size) || size > this.maxPooledBytes) return;
    while (this.pooledBytes + size > this.maxPooledBytes) {
      if (!this.evictFromLargestOtherThan(size)) return;
    }
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buffer);
    this.pooledBytes += size;
    this.idleTimer ??= setTimeout(() => this.dropIdle(), RELEASE_IDLE_MS).unref();
    this.idleTimer.refresh();
  }

  /** Returns a buffer's share of the budget without reusing it (the garbage collector frees it). */
  abandon(buffer: Buffer): void {
    this.release(buffer.length);
  }

  private fits(size: number): boolean {
    return this.outstandingBytes === 0 || this.outstandingBytes + size <= this.budgetBytes;
  }

  private release(size: number): void {
    this.outstandingBytes -= size;
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.size)) {
      const next = this.waiting.shift()!;
      this.outstandingBytes += next.size; // reserved now, so the next waiter sees it
      next.resolve();
    }
  }

  private dropIdle(): void {
    this.idleTimer = undefined;
    this.free.clear();
    this.pooledBytes = 0;
  }

  /** Drops one idle buffer of the size holding the most idle bytes (not `keep`); false if none. */
  private evictFromLargestOtherThan(keep: number): boolean {
    let victim: number | undefined;
    let victimBytes = 0;
    for (const [size, list] of this.free) {
      if (size !== keep && list.length * size > victimBytes) {
        victim = size;
        victimBytes = list.length * size;
      }
    }
    if (victim === undefined) return false;
    this.free.get(victim)!.pop();
    this.pooledBytes -= victim;
    return true;
  }
}

function sizeClass(length: number): number {
  let size = SMALLEST;
  while (size < length) size *= 2;
  return size;
}
