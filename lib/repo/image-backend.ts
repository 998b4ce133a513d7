// A read-only BlockBackend over one image version: blocks come from the pack store, zero blocks
// are synthesised and reported as holes. Runs of blocks stored back to back are read with one pread.
import { createHash } from 'node:crypto';
import { BlockError, type BlockBackend, type BlockCapabilities, type BlockSizeConstraints, type Extent } from '../block/backend.js';
import { MAX_REQUEST_BYTES } from '../nbd/protocol.js';
import { DIGEST_BYTES, type Manifest } from './manifest-format.js';
import { LazybootError } from '../errors.js';
import { BlockCorrupt, BlockMissing, RepositoryCorrupt } from './errors.js';
import type { BlockLocation, PackFile, PackStore } from './pack-store.js';
import { formatImageRef } from './image-name.js';

export interface ImageBackendOptions {
  /** Hash every block read and fail on a mismatch (costs CPU; the fetcher verifies anyway). */
  readonly verify?: boolean;
}

/** Bounds on the work one blockStatus call does. */
const MAX_EXTENTS_PER_CALL = 1024;
const MAX_BLOCKS_SCANNED_PER_CALL = 65536;

const READ_ONLY: BlockCapabilities = { write: false, flush: false, trim: false, writeZeroes: false, extents: true, multiConn: true };

/** One pread covering several adjacent stored pieces. */
interface ReadRun {
  pack: PackFile;
  filePosition: number;
  targetOffset: number;
  length: number;
}

export class ImageBackend implements BlockBackend {
  readonly size: number;
  readonly capabilities = READ_ONLY;
  readonly constraints: BlockSizeConstraints;
  private readonly zeroFlags: Uint8Array;

  constructor(
    readonly manifest: Manifest,
    private readonly store: PackStore,
    private readonly options: ImageBackendOptions = {},
  ) {
    this.size = manifest.size;
    this.constraints = { minimum: 1, preferred: Math.min(manifest.blockSize, 64 * 1024), maximum: MAX_REQUEST_BYTES };
    // One byte per block, so block status and reads need not compare digests.
    this.zeroFlags = new Uint8Array(manifest.blockCount);
    for (let i = 0; i < manifest.blockCount; i++) {
      this.zeroFlags[i] = isZero(manifest.digests, i * DIGEST_BYTES) ? 1 : 0;
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const out = Buffer.allocUnsafe(length);
    const { blockSize } = this.manifest;
    const end = offset + length;
    const runs: ReadRun[] = [];
    let run: ReadRun | undefined;
    for (let index = Math.floor(offset / blockSize); index * blockSize < end; index++) {
      const blockStart = index * blockSize;
      const from = Math.max(offset, blockStart);
      const to = Math.min(end, blockStart + blockSize, this.size);
      const targetOffset = from - offset;
      if (this.zeroFlags[index]) {
        out.fill(0, targetOffset, targetOffset + (to - from));
        run = undefined;
        continue;
      }
      const location = await this.locate(index);
      const filePosition = location.offset + (from - blockStart);
      if (run && run.pack === location.pack && run.filePosition + run.length === filePosition && run.targetOffset + run.length === targetOffset) {
        run.length += to - from;
      } else {
        run = { pack: location.pack, filePosition, targetOffset, length: to - from };
        runs.push(run);
      }
    }
    try {
      await Promise.all(runs.map((r) => r.pack.readInto(out, r.targetOffset, r.length, r.filePosition)));
      if (this.options.verify) this.verifyBlocks(out, offset, length);
    } catch (error) {
      throw toBlockError(error);
    }
    return out;
  }

  private async locate(index: number): Promise<BlockLocation> {
    const digest = this.manifest.digests.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
    const location = this.store.locate(digest) ?? (await this.store.locateFresh(digest).catch((error) => { throw toBlockError(error); }));
    const expected = Math.min(this.manifest.blockSize, this.size - index * this.manifest.blockSize);
    if (!location) {
      throw toBlockError(new BlockMissing(digest.toString('hex'), `block ${index} of ${formatImageRef(this.manifest.name, this.manifest.version)}`));
    }
    if (location.length !== expected) {
      throw toBlockError(new RepositoryCorrupt(location.pack.path, `holds block ${digest.toString('hex')} with ${location.length} bytes where ${expected} are expected`));
    }
    return location;
  }

  /** Verifies the whole blocks inside [offset, offset+length) (partial edge blocks are not checked). */
  private verifyBlocks(out: Buffer, offset: number, length: number): void {
    const { blockSize } = this.manifest;
    for (let index = Math.ceil(offset / blockSize); index * blockSize < offset + length; index++) {
      const blockStart = index * blockSize;
      const blockEnd = Math.min(blockStart + blockSize, this.size);
      if (blockEnd > offset + length || this.zeroFlags[index]) continue;
      const digest = this.manifest.digests.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
      const actual = createHash('sha256').update(out.subarray(blockStart - offset, blockEnd - offset)).digest();
      if (!actual.equals(digest)) {
        const location = this.store.locate(digest);
        throw new BlockCorrupt(digest.toString('hex'), location?.pack.path ?? '?', location?.offset ?? 0);
      }
    }
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.checkRange(offset, length);
    const { blockSize } = this.manifest;
    const end = offset + length;
    // Clients (QEMU) often ask about the whole rest of the disk but use only the first extents:
    // stop after a bounded amount of work, as the interface allows.
    const extents: Array<{ offset: number; length: number; hole: boolean; zero: boolean }> = [];
    let scanned = 0;
    for (let index = Math.floor(offset / blockSize); index * blockSize < end; index++) {
      const from = Math.max(offset, index * blockSize);
      const to = Math.min(end, (index + 1) * blockSize);
      const zero = this.zeroFlags[index] === 1;
      const last = extents[extents.length - 1];
      if (last && last.zero === zero) {
        last.length += to - from;
      } else {
        if (extents.length === MAX_EXTENTS_PER_CALL) break;
        extents.push({ offset: from, length: to - from, hole: zero, zero });
      }
      if (++scanned === MAX_BLOCKS_SCANNED_PER_CALL) break;
    }
    return extents;
  }

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new BlockError('EINVAL', `range ${offset}+${length} is outside the image (${this.size} bytes)`);
    }
  }

  async write(): Promise<void> {
    throw new BlockError('EPERM', 'repository images are read-only');
  }

  async flush(): Promise<void> {}

  async trim(): Promise<void> {
    throw new BlockError('EPERM', 'repository images are read-only');
  }

  async writeZeroes(): Promise<void> {
    throw new BlockError('EPERM', 'repository images are read-only');
  }

  /** Nothing to release: pack handles belong to the repository. */
  async close(): Promise<void> {}
}

function isZero(buffer: Buffer, at: number): boolean {
  for (let i = at; i < at + DIGEST_BYTES; i++) if (buffer[i] !== 0) return false;
  return true;
}

function toBlockError(error: unknown): BlockError {
  if (error instanceof BlockError) return error;
  const message = error instanceof LazybootError ? error.message : error instanceof Error ? error.message : String(error);
  return new BlockError('EIO', message, { cause: error });
}
