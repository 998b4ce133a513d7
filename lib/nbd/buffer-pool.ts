// Reusable reply buffers: allocating a fresh buffer per read request costs more in page faults and
// garbage collection than the read itself at high request rates. Buffers come in power-of-two
// sizes; when the pool is full, the size with the most idle bytes gives way, so that a client
// switching request sizes is not left with a pool full of the old size.
const SMALLEST = 4096;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private pooledBytes = 0;

  constructor(private readonly maxPooledBytes = 64 * 1024 * 1024) {}

  /** A buffer of at least `length` bytes (use `.subarray(0, length)`); give it back when done. */
  take(length: number): Buffer {
    const size = sizeClass(length);
    const buffer = this.free.get(size)?.pop();
    if (buffer) {
      this.pooledBytes -= size;
      return buffer;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  give(buffer: Buffer): void {
    const size = buffer.length;
    if (size !== sizeClass(size) || size > this.maxPooledBytes) return;
    while (this.pooledBytes + size > this.maxPooledBytes) {
      if (!this.evictFromLargestOtherThan(size)) return;
    }
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buffer);
    this.pooledBytes += size;
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
