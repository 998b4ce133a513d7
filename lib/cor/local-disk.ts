// The local raw disk (a sparse file or a block device) as a BlockBackend: pread/pwrite at the
// image's own offsets, so the file is always a valid raw image of what is present.
import { readSync, writeSync } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { BlockError, type BlockBackend, type BlockCapabilities, type Extent, type WriteOptions } from '../block/backend.js';
import { DiskSizeMismatch } from './errors.js';
import { readByFilling } from '../block/read-into.js';

const CAPABILITIES: BlockCapabilities = { write: true, flush: true, trim: true, writeZeroes: true, extents: false, multiConn: true };
const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/**
 * Present blocks are usually in the page cache, where a synchronous pread is a memcpy and much
 * cheaper than a thread-pool round trip. A synchronous read that takes long means the disk was
 * involved: then reads go through the thread pool for a while, so the event loop never stalls
 * for more than one slow read. Small writes (a guest's, or the blocks of one cold read) go to the
 * page cache the same way: the thread-pool round trip was most of a cold read's latency for a
 * reader with one request in flight. Writes slowed by writeback throttling switch to the pool too.
 */
const SYNC_READ_MAX_BYTES = 1024 * 1024;
const SYNC_WRITE_MAX_BYTES = 256 * 1024;
const SLOW_SYNC_IO_NS = 500_000n;
const ASYNC_AFTER_SLOW_IO_MS = 1000;

export class LocalDisk implements BlockBackend {
  readonly capabilities = CAPABILITIES;
  readonly constraints = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };

  private constructor(readonly path: string, private readonly file: FileHandle, readonly size: number, readonly created: boolean) {}

  /** Opens `path`, creating a sparse file of `size` bytes if it does not exist. */
  static async openOrCreate(path: string, size: number): Promise<LocalDisk> {
    let created = false;
    let info = await stat(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (!info) {
      const file = await open(path, 'wx');
      await file.truncate(size);
      await file.sync();
      await file.close();
      created = true;
      info = await stat(path);
    }
    // A block device reports size 0 through stat; trust the caller for those.
    if (info.isFile() && info.size !== size) throw new DiskSizeMismatch(path, info.size, size);
    const file = await open(path, 'r+');
    return new LocalDisk(path, file, size, created);
  }

  private asyncOnlyUntil = 0;

  async read(offset: number, length: number): Promise<Buffer> {
    return readByFilling(this, offset, length);
  }

  /** Fills `target` from [offset, offset + target.length) (the server passes pooled buffers). */
  async readInto(offset: number, target: Buffer): Promise<void> {
    const length = target.length;
    let done = 0;
    if (length <= SYNC_READ_MAX_BYTES && Date.now() >= this.asyncOnlyUntil) {
      const started = process.hrtime.bigint();
      done = readSync(this.file.fd, target, 0, length, offset);
      if (process.hrtime.bigint() - started > SLOW_SYNC_IO_NS) this.asyncOnlyUntil = Date.now() + ASYNC_AFTER_SLOW_IO_MS;
      if (done === 0 && length > 0) throw new BlockError('EIO', `${this.path}: short read at ${offset}`);
    }
    while (done < length) {
      const { bytesRead } = await this.file.read(target, done, length - done, offset + done);
      if (bytesRead === 0) throw new BlockError('EIO', `${this.path}: short read at ${offset + done}`);
      done += bytesRead;
    }
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    let done = 0;
    if (data.length <= SYNC_WRITE_MAX_BYTES && Date.now() >= this.asyncOnlyUntil) {
      const started = process.hrtime.bigint();
      done = writeSync(this.file.fd, data, 0, data.length, offset);
      if (process.hrtime.bigint() - started > SLOW_SYNC_IO_NS) this.asyncOnlyUntil = Date.now() + ASYNC_AFTER_SLOW_IO_MS;
    }
    while (done < data.length) {
      const { bytesWritten } = await this.file.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    if (options?.fua) await this.flush();
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    for (let at = 0; at < length; at += ZERO_CHUNK.length) {
      await this.write(offset + at, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, length - at)));
    }
    if (options?.fua) await this.flush();
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    await this.writeZeroes(offset, length, options);
  }

  async flush(): Promise<void> {
    await this.file.datasync();
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length: Math.min(length, this.size - offset), hole: false, zero: false }];
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
