// The refusals every read-only backend shares: writes of any kind are EPERM, flush has nothing to
// make durable, and block status (unless a subclass knows better) says "all data".
import { BlockError, type BlockBackend, type BlockCapabilities, type BlockSizeConstraints, type Extent } from './backend.js';

export const READ_ONLY_CAPABILITIES: BlockCapabilities = {
  write: false,
  flush: false,
  trim: false,
  writeZeroes: false,
  extents: false,
  multiConn: true,
};

export abstract class ReadOnlyBackend implements BlockBackend {
  abstract readonly size: number;
  abstract readonly constraints: BlockSizeConstraints;
  readonly capabilities: BlockCapabilities = READ_ONLY_CAPABILITIES;
  /** What the log says when a client tries to write. */
  protected readonly refusal: string = 'read-only';

  abstract read(offset: number, length: number): Promise<Buffer>;
  abstract close(): Promise<void>;

  async write(): Promise<void> {
    throw new BlockError('EPERM', this.refusal);
  }

  async flush(): Promise<void> {}

  async trim(): Promise<void> {
    throw new BlockError('EPERM', this.refusal);
  }

  async writeZeroes(): Promise<void> {
    throw new BlockError('EPERM', this.refusal);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length: Math.min(length, this.size - offset), hole: false, zero: false }];
  }
}
