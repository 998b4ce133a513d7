// Reusable reply buffers: allocating a fresh buffer per read request costs more in garbage
// collection than the read itself at high request rates. Buffers come in power-of-two sizes.
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
    if (size !== sizeClass(size) || this.pooledBytes + size > this.maxPooledBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buffer);
    this.pooledBytes += size;
  }
}

function sizeClass(length: number): number {
  let size = SMALLEST;
  while (size < length) size *= 2;
  return size;
}
