// The local raw disk (a sparse file or a block device) as a BlockBackend: pread/pwrite at the
// image's own offsets, so the file is always a valid raw image of what is present.
import { readSync, writeSync } from 'node:fs';
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { BlockError, MAX_REQUEST_BYTES, type BlockBackend, type BlockCapabilities, type Extent, type WriteOptions } from '../block/backend.js';
import { DiskMissing, DiskNotADisk, DiskSizeMismatch } from './errors.js';
import { readByFilling } from '../block/read-into.js';
import { SyncIoGuard } from '../block/sync-io-guard.js';

const CAPABILITIES: BlockCapabilities = { write: true, flush: true, trim: true, writeZeroes: true, extents: false, multiConn: true };
const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/**
 * Present blocks are usually in the page cache: small reads are synchronous (see SyncIoGuard).
 * So are small writes (a guest's, or the blocks of one cold read): the thread-pool round trip was
 * most of a cold read's latency for a reader with one request in flight.
 */
const SYNC_READ_MAX_BYTES = 1024 * 1024;
const SYNC_WRITE_MAX_BYTES = 256 * 1024;
const SLOW_SYNC_IO_NS = 500_000n;

/** The local disk is the guest's data: owner only, whatever the umask (which only removes bits). */
const FILE_MODE = 0o600;

export class LocalDisk implements BlockBackend {
  readonly capabilities = CAPABILITIES;
  readonly constraints = { minimum: 1, preferred: 4096, maximum: MAX_REQUEST_BYTES };

  private constructor(readonly path: string, private readonly file: FileHandle, readonly size: number, readonly created: boolean) {}

  /**
   * Opens `path`, creating a sparse file of `size` bytes if it does not exist and `create` allows
   * (not when a map exists: a new file is not the disk that map describes).
   */
  static async openOrCreate(path: string, size: number, options: { create?: boolean } = {}): Promise<LocalDisk> {
    let created = false;
    let info = await stat(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (!info) {
      if (options.create === false) throw new DiskMissing(path);
      const file = await open(path, 'wx', FILE_MODE);
      await file.truncate(size);
      await file.sync();
      await file.close();
      created = true;
      info = await stat(path);
    }
    if (!info.isFile() && !info.isBlockDevice()) throw new DiskNotADisk(path);
    const file = await open(path, 'r+');
    try {
      // Checked on the opened file, so a rename between stat and open cannot slip through.
      const opened = await file.stat({ bigint: true });
      const actual = opened.isBlockDevice() ? await blockDeviceSize(opened) : Number(opened.size);
      if (actual !== undefined && actual !== size) throw new DiskSizeMismatch(path, actual, size);
      return new LocalDisk(path, file, size, created);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  /**
   * What names this disk across renames (not across copies): inode and birth time for a file
   * (an inode number alone is reused at once by a file created after a delete; st_dev is left
   * out because it can change across reboots), the device number for a block device.
   */
  async identity(): Promise<string> {
    const info = await this.file.stat({ bigint: true });
    if (info.isBlockDevice()) return `block ${deviceNumber(info.rdev)}`;
    return `file ino:${info.ino} born:${info.birthtimeNs}`;
  }

  /** Shared by reads and writes: a slow one of either means the disk is busy. */
  private readonly syncIo = new SyncIoGuard(SLOW_SYNC_IO_NS);

  async read(offset: number, length: number): Promise<Buffer> {
    return readByFilling(this, offset, length);
  }

  /** Fills `target` from [offset, offset + target.length) (the server passes pooled buffers). */
  async readInto(offset: number, target: Buffer): Promise<void> {
    const length = target.length;
    let done = 0;
    if (length <= SYNC_READ_MAX_BYTES) {
      const read = this.syncIo.run(() => readSync(this.file.fd, target, 0, length, offset));
      if (read === 0 && length > 0) throw new BlockError('EIO', `${this.path}: short read at ${offset}`);
      done = read ?? 0;
    }
    while (done < length) {
      const { bytesRead } = await this.file.read(target, done, length - done, offset + done);
      if (bytesRead === 0) throw new BlockError('EIO', `${this.path}: short read at ${offset + done}`);
      done += bytesRead;
    }
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    let done = 0;
    if (data.length <= SYNC_WRITE_MAX_BYTES) done = this.syncIo.run(() => writeSync(this.file.fd, data, 0, data.length, offset)) ?? 0;
    while (done < data.length) {
      const { bytesWritten } = await this.file.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    if (options?.fua) await this.flush();
  }

  /**
   * A write off the request path (fetched blocks stored after their reply): always on the thread
   * pool, so the memcpy into the page cache runs beside the event loop instead of stalling the
   * next guest request behind it (a 192 KiB store cost the loop ~0.27 ms per fetched run).
   */
  async writeInBackground(offset: number, data: Buffer): Promise<void> {
    for (let done = 0; done < data.length;) {
      const { bytesWritten } = await this.file.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
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

function deviceNumber(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** A block device's size from sysfs (stat says 0); undefined when sysfs cannot tell. */
async function blockDeviceSize(info: BigIntStats): Promise<number | undefined> {
  const sectors = await readFile(`/sys/dev/block/${deviceNumber(info.rdev)}/size`, 'utf8').catch(() => undefined);
  return sectors === undefined ? undefined : Number(sectors.trim()) * 512;
}
