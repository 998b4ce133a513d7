// The content-addressed block store: append-only pack files plus one index per pack
// (digest → pack, offset, length), loaded into memory. Packs are read with cached file handles
// so that serving a block costs one pread, and adjacent blocks can be read in one go.
import { open, readdir, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { open as fsOpen, read as fsRead, close as fsClose, readSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { RepositoryCorrupt } from './errors.js';
import { SyncIoGuard } from '../block/sync-io-guard.js';
import { decodePackIndex, encodePackIndex, type PackIndexEntry } from './pack-index.js';
import { fsyncDirectory, writeFileDurably } from './durable-file.js';
import { FILE_MODE } from './modes.js';
import { exactInteger } from './exact-integer.js';

const PACK_SUFFIX = '.pack';
const INDEX_SUFFIX = '.idx';
/** Blocks are gathered into writes of this size while a pack is written. */
const WRITE_BUFFER_BYTES = 8 * 1024 * 1024;

/**
 * One pack file; its descriptor is opened on first read and kept. Reads use the callback fs API
 * on the raw descriptor: measurably cheaper per call than FileHandle.read on the serving path.
 */
export class PackFile {
  private fd?: number;
  private opening?: Promise<number>;
  /** One bit per index entry: the block was read and matched its digest (see ImageBackend's verifyOnce). */
  private readonly verified: Uint8Array;

  constructor(readonly path: string, entryCount = 0) {
    this.verified = new Uint8Array(Math.ceil(entryCount / 8));
  }

  isVerified(entry: number): boolean {
    return (this.verified[entry >> 3]! & (1 << (entry & 7))) !== 0;
  }

  markVerified(entry: number): void {
    this.verified[entry >> 3]! |= 1 << (entry & 7);
  }

  /** Reads exactly `length` bytes at `position` into `target` at `targetOffset`. */
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

/** Small reads are synchronous while the page cache serves them (see SyncIoGuard); one guard for all packs. */
const SYNC_READ_MAX_BYTES = 1024 * 1024;
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

export interface BlockLocation {
  readonly pack: PackFile;
  /** Position of the block in its pack's index (its bit in PackFile's verified set). */
  readonly entry: number;
  readonly offset: number;
  readonly length: number;
}

function digestKey(digest: Buffer): string {
  return digest.toString('latin1');
}

export class PackStore {
  private readonly locations = new Map<string, BlockLocation>();
  private readonly packs = new Map<string, PackFile>();
  private refreshing?: Promise<void>;
  /** Index files (or the directory) that could not be loaded, and why; see loadNewIndexes. */
  readonly damage = new Map<string, string>();

  private constructor(readonly dir: string) {}

  static async open(dir: string): Promise<PackStore> {
    const store = new PackStore(dir);
    await store.refresh();
    return store;
  }

  /** Where a block is stored, from the indexes loaded so far. */
  locate(digest: Buffer): BlockLocation | undefined {
    return this.locations.get(digestKey(digest));
  }

  /** Like locate, but on a miss loads indexes other writers may have added since. */
  async locateFresh(digest: Buffer): Promise<BlockLocation | undefined> {
    const found = this.locate(digest);
    if (found) return found;
    await this.refresh();
    return this.locate(digest);
  }

  /** Loads the indexes of packs not seen yet. */
  refresh(): Promise<void> {
    this.refreshing ??= this.loadNewIndexes().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /**
   * A damaged index (or a directory or unreadable file named like one) is recorded and skipped:
   * its blocks are missing to the images that need them, and everything else is still served.
   */
  private async loadNewIndexes(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      this.damage.set(this.dir, `cannot be listed (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
      return;
    }
    for (const entry of names) {
      if (!entry.endsWith(INDEX_SUFFIX) || entry.startsWith('.')) continue;
      const packName = entry.slice(0, -INDEX_SUFFIX.length) + PACK_SUFFIX;
      if (this.packs.has(packName)) continue;
      const indexPath = join(this.dir, entry);
      let entries: PackIndexEntry[] | string;
      try {
        entries = decodePackIndex(await readFile(indexPath));
      } catch (error) {
        entries = `cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`;
      }
      if (typeof entries === 'string') {
        this.damage.set(indexPath, entries);
        continue;
      }
      this.damage.delete(indexPath);
      this.addPack(packName, entries);
    }
  }

  private addPack(packName: string, entries: readonly PackIndexEntry[]): void {
    const pack = new PackFile(join(this.dir, packName), entries.length);
    this.packs.set(packName, pack);
    entries.forEach((entry, index) => {
      this.locations.set(digestKey(entry.digest), { pack, entry: index, offset: entry.offset, length: entry.length });
    });
  }

  /** Starts a new pack; nothing in it is visible to readers until seal(). */
  beginPack(): PackWriter {
    const base = `pack-${Date.now().toString(16).padStart(12, '0')}-${process.pid}-${randomBytes(4).toString('hex')}`;
    return new PackWriter(this, base, (entries) => this.addPack(base + PACK_SUFFIX, entries));
  }

  async close(): Promise<void> {
    await Promise.all([...this.packs.values()].map((pack) => pack.close()));
  }
}

/** Appends new blocks to one pack file, then makes them visible atomically with the pack's index. */
export class PackWriter {
  private handle?: FileHandle;
  private readonly entries: PackIndexEntry[] = [];
  private readonly added = new Set<string>();
  private buffer = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private buffered = 0;
  private written = 0;
  private finished = false;

  constructor(
    private readonly store: PackStore,
    private readonly baseName: string,
    private readonly publish: (entries: readonly PackIndexEntry[]) => void,
  ) {}

  get packPath(): string {
    return join(this.store.dir, this.baseName + PACK_SUFFIX);
  }

  /** Whether the store (or this pack) already holds the block. */
  has(digest: Buffer): boolean {
    return this.added.has(digestKey(digest)) || this.store.locate(digest) !== undefined;
  }

  /** Stores the block unless already present; returns true when it was new. `data` may be reused by the caller afterwards. */
  async add(digest: Buffer, data: Buffer): Promise<boolean> {
    if (this.finished) throw new Error('PackWriter used after seal/abort');
    if (this.has(digest)) return false;
    this.added.add(digestKey(digest));
    this.entries.push({ digest: Buffer.from(digest), offset: this.written + this.buffered, length: data.length });
    if (this.buffered + data.length > this.buffer.length) await this.flushBuffer();
    if (data.length > this.buffer.length) {
      await this.writeOut(data);
    } else {
      data.copy(this.buffer, this.buffered);
      this.buffered += data.length;
    }
    return true;
  }

  get newBlocks(): number {
    return this.entries.length;
  }

  get bytesStored(): number {
    return this.written + this.buffered;
  }

  private async flushBuffer(): Promise<void> {
    if (this.buffered === 0) return;
    const chunk = this.buffer.subarray(0, this.buffered);
    this.buffered = 0;
    await this.writeOut(chunk);
  }

  private async writeOut(chunk: Buffer): Promise<void> {
    this.handle ??= await open(this.packPath, 'wx', FILE_MODE);
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await this.handle.write(chunk, done, chunk.length - done, this.written + done);
      done += bytesWritten;
    }
    this.written += chunk.length;
  }

  /** Makes the pack durable, then its index (atomically): only then are the blocks visible. */
  async seal(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    if (this.entries.length === 0) {
      await this.discard();
      return;
    }
    await this.flushBuffer();
    this.buffer = Buffer.alloc(0);
    const handle = this.handle!;
    await handle.sync();
    await handle.close();
    this.handle = undefined;
    await fsyncDirectory(this.store.dir);
    await writeFileDurably(join(this.store.dir, this.baseName + INDEX_SUFFIX), encodePackIndex(this.entries));
    this.publish(this.entries);
  }

  /** Drops everything written; nothing becomes visible. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.discard();
  }

  private async discard(): Promise<void> {
    if (this.handle) {
      await this.handle.close().catch(() => {});
      this.handle = undefined;
      await unlink(this.packPath).catch(() => {});
    }
    this.buffer = Buffer.alloc(0);
  }
}
