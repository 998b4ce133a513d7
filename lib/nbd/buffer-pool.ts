// Reusable reply buffers, with an optional byte budget. Allocating a fresh buffer per read request
// costs more in page faults and garbage collection than the read itself at high request rates, so
// buffers are recycled (power-of-two sizes; when the pool is full, the size with the most idle
// bytes gives way). A budget bounds the bytes handed out at once: a request beyond it waits for
// a buffer to come back (backpressure). The NBD server bounds each connection on its own instead
// (connection-budget.ts), so one client that stops reading cannot hold every other's. Idle buffers are dropped after a quiet spell, so an idle
// server stays small.
import { allocCopyBuffer } from '../base/copy-buffer.js';
import { ByteBudget } from './byte-budget.js';

const SMALLEST = 4096;
/** Idle buffers are given back to the system after this long without a request. */
const RELEASE_IDLE_MS = 2_000;

export interface BufferPoolLimits {
  /** Bytes of idle buffers kept for reuse. */
  readonly maxPooledBytes?: number;
  /**
   * Bytes handed out at once by this pool; more waits (one request may exceed it alone). The NBD
   * server leaves it unbounded and bounds each connection instead (connection-budget.ts).
   */
  readonly budgetBytes?: number;
}

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private pooledBytes = 0;
  private readonly budget: ByteBudget;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly maxPooledBytes: number;

  constructor(limits: BufferPoolLimits = {}) {
    this.maxPooledBytes = limits.maxPooledBytes ?? 8 * 1024 * 1024;
    this.budget = new ByteBudget(limits.budgetBytes ?? 8 * 1024 * 1024);
  }

  /**
   * A buffer of at least `length` bytes (use `.subarray(0, length)`), once the budget has room;
   * give it back with give(), or with abandon() if it cannot be reused (still being written).
   */
  async take(length: number): Promise<Buffer> {
    const size = sizeClass(length);
    await this.budget.reserve(size);
    const buffer = this.free.get(size)?.pop();
    if (buffer) {
      this.pooledBytes -= size;
      return buffer;
    }
    return allocCopyBuffer(size);
  }

  give(buffer: Buffer): void {
    this.budget.release(buffer.length);
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
    this.budget.release(buffer.length);
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

/** The size of the buffer take(length) hands out. */
export function sizeClass(length: number): number {
  let size = SMALLEST;
  while (size < length) size *= 2;
  return size;
}
