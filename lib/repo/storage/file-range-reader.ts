// Reads of one local file at offsets, through a descriptor opened on first read and kept: serving a
// block costs one pread. Reads use the callback fs API on the raw descriptor (measurably cheaper
// per call than FileHandle.read on the serving path), and small reads are synchronous while the
// page cache serves them (see SyncIoGuard).
import { open as fsOpen, read as fsRead, close as fsClose, readSync } from 'node:fs';
import { RepositoryCorrupt } from '../errors.js';
import { SyncIoGuard } from '../../block/sync-io-guard.js';
import { exactInteger } from '../exact-integer.js';
import type { RangeReader } from './storage.js';

export class FileRangeReader implements RangeReader {
  private fd?: number;
  private opening?: Promise<number>;

  constructor(readonly path: string) {}

  async readInto(target: Buffer, targetOffset: number, length: number, position: number): Promise<void> {
    const fd = this.fd ?? (await this.open());
    let done = 0;
    while (done < length) {
      const bytesRead = await preadOnce(fd, target, targetOffset + done, length - done, position + done).catch((error: NodeJS.ErrnoException) => {
        throw new RepositoryCorrupt(this.path, `cannot be read (${error.code ?? error.message})`, { cause: error });
      });
      if (bytesRead === 0) throw new RepositoryCorrupt(this.path, `is truncated (no data at offset ${exactInteger(position + done)})`);
      done += bytesRead;
    }
  }

  private open(): Promise<number> {
    this.opening ??= new Promise<number>((resolve, reject) => {
      fsOpen(this.path, 'r', (error, fd) => {
        if (error) {
          this.opening = undefined; // let a later read retry, e.g. after the file was restored
          reject(new RepositoryCorrupt(this.path, error.code === 'ENOENT' ? 'is missing' : `cannot be opened (${error.code ?? error.message})`, { cause: error }));
        } else {
          this.fd = fd;
          resolve(fd);
        }
      });
    });
    return this.opening;
  }

  async close(): Promise<void> {
    const fd = this.fd ?? (await this.opening?.catch(() => undefined));
    this.fd = undefined;
    this.opening = undefined;
    if (fd !== undefined) await new Promise<void>((resolve) => fsClose(fd, () => resolve()));
  }
}

/**
 * Small reads are synchronous while the page cache serves them (see SyncIoGuard); one guard for all
 * packs. Up to 256 KiB (a copy of ~60 µs here), so nbdcopy's reads stay synchronous; larger ones go
 * to the thread pool, where their copy runs beside the event loop instead of in front of the other
 * requests' replies (1 MiB synchronous reads, at 120-300 µs each, kept tripping the guard).
 */
const SYNC_READ_MAX_BYTES = 256 * 1024;
const syncReads = new SyncIoGuard(300_000n);

function preadOnce(fd: number, target: Buffer, offset: number, length: number, position: number): Promise<number> {
  if (length <= SYNC_READ_MAX_BYTES) {
    try {
      const bytesRead = syncReads.run(() => readSync(fd, target, offset, length, position));
      if (bytesRead !== undefined) return Promise.resolve(bytesRead);
    } catch (error) {
      return Promise.reject(error);
    }
  }
  return new Promise((resolve, reject) => {
    fsRead(fd, target, offset, length, position, (error, bytesRead) => (error ? reject(error) : resolve(bytesRead)));
  });
}
