// The content-addressed block store: append-only packs plus one index per pack (digest → pack,
// offset, length), loaded into memory, all under "packs/" in the repository's storage. Packs are
// read through kept readers (a local file costs one pread per read), adjacent blocks in one go.
import { randomBytes } from 'node:crypto';
import { decodePackIndex, encodePackIndex, type PackIndexEntry } from './pack-index.js';
import type { ObjectUpload, RangeReader, RepositoryStorage } from './storage/storage.js';

const PACKS = 'packs';
const PACK_SUFFIX = '.pack';
const INDEX_SUFFIX = '.idx';
/** Blocks are gathered into writes of this size while a pack is written. */
const WRITE_BUFFER_BYTES = 8 * 1024 * 1024;
/**
 * In an object store, `repo check --repair` removes a pack and index no manifest refers to once its
 * index is older than --min-age (store-check.ts). A writer that reuses blocks of such a pack will
 * refer to it: it rewrites the index (same bytes) to make it young again, at most this often.
 */
const KEEP_ALIVE_MS = 10 * 60_000;

/** One pack; its reader (e.g. an open file) is made on first read and kept. */
export class PackFile {
  private reader?: RangeReader;
  /** One bit per index entry: the block was read and matched its digest (see ImageBackend's verifyOnce). */
  private readonly verified: Uint8Array;

  /** `path` names the pack in messages (a file path or an s3:// URI). */
  constructor(private readonly storage: RepositoryStorage, private readonly key: string, readonly path: string, entryCount = 0) {
    this.verified = new Uint8Array(Math.ceil(entryCount / 8));
  }

  isVerified(entry: number): boolean {
    return (this.verified[entry >> 3]! & (1 << (entry & 7))) !== 0;
  }

  markVerified(entry: number): void {
    this.verified[entry >> 3]! |= 1 << (entry & 7);
  }

  /** The pack's index, beside it. */
  get indexKey(): string {
    return this.key.slice(0, -PACK_SUFFIX.length) + INDEX_SUFFIX;
  }

  /** Reads exactly `length` bytes at `position` into `target` at `targetOffset`. */
  readInto(target: Buffer, targetOffset: number, length: number, position: number): Promise<void> {
    this.reader ??= this.storage.openRange(this.key);
    return this.reader.readInto(target, targetOffset, length, position);
  }

  async close(): Promise<void> {
    const reader = this.reader;
    this.reader = undefined;
    await reader?.close();
  }
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
  /** Packs whose index this process rewrote to keep them young, when, and whether they were still there. */
  private readonly keptAlive = new Map<PackFile, { at: number; alive: Promise<boolean> }>();
  /** Index files (or the directory) that could not be loaded, and why; see loadNewIndexes. */
  readonly damage = new Map<string, string>();

  /** Where the packs are, for messages. */
  readonly dir: string;

  private constructor(readonly storage: RepositoryStorage) {
    this.dir = storage.describe(PACKS);
  }

  static async open(storage: RepositoryStorage): Promise<PackStore> {
    const store = new PackStore(storage);
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
      names = (await this.storage.list(PACKS)).map((entry) => entry.name);
    } catch (error) {
      this.damage.set(this.dir, `cannot be listed (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
      return;
    }
    for (const entry of names) {
      if (!entry.endsWith(INDEX_SUFFIX) || entry.startsWith('.')) continue;
      const packName = entry.slice(0, -INDEX_SUFFIX.length) + PACK_SUFFIX;
      if (this.packs.has(packName)) continue;
      const indexKey = `${PACKS}/${entry}`;
      const indexPath = this.storage.describe(indexKey);
      let entries: PackIndexEntry[] | string;
      try {
        const bytes = await this.storage.get(indexKey);
        entries = bytes ? decodePackIndex(bytes) : 'is missing (removed while the pack list was read)';
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
    const key = `${PACKS}/${packName}`;
    const pack = new PackFile(this.storage, key, this.storage.describe(key), entries.length);
    this.packs.set(packName, pack);
    entries.forEach((entry, index) => {
      this.locations.set(digestKey(entry.digest), { pack, entry: index, offset: entry.offset, length: entry.length });
    });
  }

  /**
   * Before a writer refers to blocks of `pack` it did not write: in an object store, rewrites the
   * pack's index unchanged so that `repo check --repair` sees it young and keeps it (see
   * KEEP_ALIVE_MS). False when the index is gone (a repair removed the pack): its blocks are
   * forgotten, and the writer stores them anew. A directory's check never removes indexed packs.
   */
  keepAlive(pack: PackFile): Promise<boolean> {
    if (this.storage.isLocalDirectory) return Promise.resolve(true);
    const last = this.keptAlive.get(pack);
    if (last && Date.now() - last.at < KEEP_ALIVE_MS) return last.alive;
    const alive = (async () => {
      const bytes = await this.storage.get(pack.indexKey);
      if (bytes) {
        await this.storage.put(pack.indexKey, bytes);
        return true;
      }
      this.forget(pack);
      return false;
    })();
    this.keptAlive.set(pack, { at: Date.now(), alive });
    alive.catch(() => this.keptAlive.delete(pack));
    return alive;
  }

  private forget(pack: PackFile): void {
    for (const [name, known] of this.packs) if (known === pack) this.packs.delete(name);
    for (const [digest, location] of this.locations) if (location.pack === pack) this.locations.delete(digest);
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
  private upload?: ObjectUpload;
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
    return this.store.storage.describe(`${PACKS}/${this.baseName}${PACK_SUFFIX}`);
  }

  /** Whether the store (or this pack) already holds the block. */
  has(digest: Buffer): boolean {
    return this.added.has(digestKey(digest)) || this.store.locate(digest) !== undefined;
  }

  /** Stores the block unless already present; returns true when it was new. `data` may be reused by the caller afterwards. */
  async add(digest: Buffer, data: Buffer): Promise<boolean> {
    if (this.finished) throw new Error('PackWriter used after seal/abort');
    if (this.added.has(digestKey(digest))) return false;
    const stored = this.store.locate(digest);
    if (stored && (await this.store.keepAlive(stored.pack))) return false;
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
    this.upload ??= this.store.storage.upload(`${PACKS}/${this.baseName}${PACK_SUFFIX}`);
    await this.upload.write(chunk);
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
    await this.upload!.finish();
    this.upload = undefined;
    await this.store.storage.put(`${PACKS}/${this.baseName}${INDEX_SUFFIX}`, encodePackIndex(this.entries));
    this.publish(this.entries);
  }

  /** Drops everything written; nothing becomes visible. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.discard();
  }

  private async discard(): Promise<void> {
    if (this.upload) {
      await this.upload.abort().catch(() => {});
      this.upload = undefined;
    }
    this.buffer = Buffer.alloc(0);
  }
}
