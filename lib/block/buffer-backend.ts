// A read-only BlockBackend over bytes held in memory (e.g. a manifest served as an NBD export).
import { BlockError, MAX_REQUEST_BYTES, type BlockSizeConstraints } from './backend.js';
import { ReadOnlyBackend } from './read-only.js';

export class ReadOnlyBufferBackend extends ReadOnlyBackend {
  protected override readonly refusal = 'this export is read-only';
  readonly constraints: BlockSizeConstraints = { minimum: 1, preferred: 4096, maximum: MAX_REQUEST_BYTES };

  constructor(private readonly bytes: Buffer) {
    super();
  }

  get size(): number {
    return this.bytes.length;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.bytes.length) {
      throw new BlockError('EINVAL', `range ${offset}+${length} is outside the ${this.bytes.length}-byte export`);
    }
    return this.bytes.subarray(offset, offset + length);
  }

  async close(): Promise<void> {}
}
