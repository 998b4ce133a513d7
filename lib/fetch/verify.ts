// Verify layer: reads whole blocks from one repository and checks each against the manifest's
// SHA-256 (once per block, in a worker thread for multi-block runs: see block-hasher.ts). A
// mismatch fails the read: nothing unverified goes further up the stack.
import { BlockError, type BlockBackend } from '../block/backend.js';
import { readsIntoBuffer } from '../block/read-into.js';
import { ReadOnlyBackend } from '../block/read-only.js';
import { DIGEST_BYTES, isZeroDigestAt, type Manifest } from '../repo/manifest-format.js';
import { DigestMismatch } from './errors.js';
import { hashBlocks } from './block-hasher.js';
import { acquireShared } from './shared-buffers.js';
import { isAllZero } from '../block/zero-bytes.js';

export class VerifyBackend extends ReadOnlyBackend {
  readonly size: number;

  constructor(readonly source: string, private readonly manifest: Manifest, private readonly inner: BlockBackend) {
    super();
    this.size = manifest.size;
  }

  get constraints() {
    return { minimum: this.manifest.blockSize, preferred: this.manifest.blockSize, maximum: this.inner.constraints.maximum };
  }

  /** `offset` must be block-aligned and `length` whole blocks (the last block may be short). */
  async read(offset: number, length: number): Promise<Buffer> {
    const { blockSize } = this.manifest;
    const end = offset + length;
    if (offset % blockSize !== 0 || (end % blockSize !== 0 && end !== this.size) || end > this.size) {
      throw new BlockError('EINVAL', `verified reads need whole blocks, got ${offset}+${length}`);
    }
    const data = await this.readShared(offset, length);
    const count = Math.ceil(length / blockSize);
    const first = offset / blockSize;
    const zero = new Uint8Array(count);
    for (let i = 0; i < count; i++) zero[i] = isZeroDigestAt(this.manifest.digests, (first + i) * DIGEST_BYTES) ? 1 : 0;
    const digests = await hashBlocks(data, blockSize, zero);
    for (let at = 0; at < length; at += blockSize) {
      const index = (offset + at) / blockSize;
      const actualAt = (at / blockSize) * DIGEST_BYTES;
      const expectedAt = index * DIGEST_BYTES;
      if (zero[at / blockSize] !== 1) {
        if (digests.compare(this.manifest.digests, expectedAt, expectedAt + DIGEST_BYTES, actualAt, actualAt + DIGEST_BYTES) !== 0) throw new DigestMismatch(this.source, index);
      } else if (!isAllZero(data, at, Math.min(at + blockSize, length))) {
        throw new DigestMismatch(this.source, index);
      }
    }
    return data;
  }

  /** Into shared memory when the source can fill a buffer (the hasher then reads it in place). */
  private async readShared(offset: number, length: number): Promise<Buffer> {
    if (!readsIntoBuffer(this.inner)) {
      const data = await this.inner.read(offset, length);
      if (data.length !== length) throw new BlockError('EIO', `${this.source} returned ${data.length} bytes for ${length}`);
      return data;
    }
    // The caller may give the buffer back with releaseShared once it is done with it.
    const data = acquireShared(length);
    await this.inner.readInto(offset, data);
    return data;
  }

  async close(): Promise<void> {
    await this.inner.close();
  }
}

