// A writable in-memory BlockBackend for server tests (the COR device is the real writable backend;
// this one only lets the NBD server's write path be tested against real clients on its own).
import { BlockError, type BlockBackend, type BlockCapabilities, type Extent, type WriteOptions } from '../../lib/block/backend.js';

export class MemoryBackend implements BlockBackend {
  readonly capabilities: BlockCapabilities = { write: true, flush: true, trim: true, writeZeroes: true, extents: true, multiConn: true };
  readonly constraints = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };
  readonly data: Buffer;
  /** Per 4 KiB page: trimmed (reads as zero, reported as a hole). */
  private readonly trimmed: Uint8Array;
  flushes = 0;
  fuaWrites = 0;

  constructor(readonly size: number) {
    this.data = Buffer.alloc(size);
    this.trimmed = new Uint8Array(Math.ceil(size / 4096)).fill(1);
  }

  private check(offset: number, length: number): void {
    if (offset + length > this.size) throw new BlockError('ENOSPC', 'beyond the end');
  }

  private mark(offset: number, length: number, trimmed: 0 | 1): void {
    // Only whole pages become holes; any write makes its pages data.
    const first = trimmed ? Math.ceil(offset / 4096) : Math.floor(offset / 4096);
    const end = trimmed ? Math.floor((offset + length) / 4096) : Math.ceil((offset + length) / 4096);
    for (let page = first; page < end; page++) this.trimmed[page] = trimmed;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.data.subarray(offset, offset + length));
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.check(offset, data.length);
    data.copy(this.data, offset);
    this.mark(offset, data.length, 0);
    if (options?.fua) this.fuaWrites++;
  }

  async flush(): Promise<void> {
    this.flushes++;
  }

  async trim(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    this.data.fill(0, offset, offset + length);
    this.mark(offset, length, 1);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    this.data.fill(0, offset, offset + length);
    this.mark(offset, length, 0);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const extents: Extent[] = [];
    for (let at = offset; at < offset + length; ) {
      const page = Math.floor(at / 4096);
      const to = Math.min(offset + length, (page + 1) * 4096);
      const hole = this.trimmed[page] === 1;
      const last = extents[extents.length - 1];
      if (last && last.hole === hole) extents[extents.length - 1] = { ...last, length: last.length + (to - at) };
      else extents.push({ offset: at, length: to - at, hole, zero: hole });
      at = to;
    }
    return extents;
  }

  async close(): Promise<void> {}
}
