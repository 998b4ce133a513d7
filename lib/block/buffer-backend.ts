// A read-only BlockBackend over bytes held in memory (e.g. a manifest served as an NBD export).
import { BlockError, type BlockBackend, type BlockCapabilities, type BlockSizeConstraints, type Extent } from './backend.js';

const READ_ONLY: BlockCapabilities = { write: false, flush: false, trim: false, writeZeroes: false, extents: false, multiConn: true };

export class ReadOnlyBufferBackend implements BlockBackend {
  readonly capabilities = READ_ONLY;
  readonly constraints: BlockSizeConstraints = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };

  constructor(private readonly bytes: Buffer) {}

  get size(): number {
    return this.bytes.length;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.bytes.length) {
      throw new BlockError('EINVAL', `range ${offset}+${length} is outside the ${this.bytes.length}-byte export`);
    }
    return this.bytes.subarray(offset, offset + length);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length, hole: false, zero: false }];
  }

  async write(): Promise<void> {
    throw new BlockError('EPERM', 'this export is read-only');
  }

  async flush(): Promise<void> {}

  async trim(): Promise<void> {
    throw new BlockError('EPERM', 'this export is read-only');
  }

  async writeZeroes(): Promise<void> {
    throw new BlockError('EPERM', 'this export is read-only');
  }

  async close(): Promise<void> {}
}
