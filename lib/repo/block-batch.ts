// A batch of blocks being added to the repository: hashed once, deduplicated, appended to one new
// pack. Nothing is visible to readers until the batch is sealed (Repository.commitImage does that).
import { createHash } from 'node:crypto';
import { ZERO_DIGEST } from './manifest-format.js';
import type { PackWriter } from './pack-store.js';

export interface PutResult {
  readonly digest: Buffer;
  /** 'new': stored now; 'present': already in the repository; 'zero': all zeros, never stored. */
  readonly outcome: 'new' | 'present' | 'zero';
}

export class BlockBatch {
  private zeroBuffer = Buffer.alloc(0);
  newBlocks = 0;
  presentBlocks = 0;
  zeroBlocks = 0;

  constructor(private readonly writer: PackWriter) {}

  /** Adds one block (any length up to the image's block size). `data` may be reused afterwards. */
  async put(data: Buffer): Promise<PutResult> {
    if (this.isAllZero(data)) {
      this.zeroBlocks++;
      return { digest: ZERO_DIGEST, outcome: 'zero' };
    }
    const digest = createHash('sha256').update(data).digest();
    const stored = await this.writer.add(digest, data);
    if (stored) this.newBlocks++;
    else this.presentBlocks++;
    return { digest, outcome: stored ? 'new' : 'present' };
  }

  /** Bytes appended to the repository by this batch. */
  get bytesStored(): number {
    return this.writer.bytesStored;
  }

  private isAllZero(data: Buffer): boolean {
    if (this.zeroBuffer.length < data.length) this.zeroBuffer = Buffer.alloc(data.length);
    return data.equals(this.zeroBuffer.subarray(0, data.length));
  }

  /** Makes the stored blocks durable and visible. */
  seal(): Promise<void> {
    return this.writer.seal();
  }

  abort(): Promise<void> {
    return this.writer.abort();
  }
}
