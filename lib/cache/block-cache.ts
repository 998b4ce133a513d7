// The host-wide block cache's store: one directory of blocks named by their SHA-256 digest, shared
// by every process (every VM, every image) of the user on this host. A block is written under a
// temporary name and renamed into place, so a reader never sees a torn block (a SIGKILL leaves at
// most a temporary file, removed by the next prune); and every block read is verified against its
// name anyway (a damaged file is removed and counts as a miss). The size is bounded: past
// `maxBytes` the least recently used blocks (file mtime, set on every hit) are removed until the
// cache is back under LOW_WATER of it. Removing a block another process is about to read only turns
// that read into a miss: the cache is never the only copy of anything.
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensurePrivateDirectory } from './private-directory.js';

/** Only these names are blocks: a shard `ab/` holds `ab…` (64 hex digits); anything else is left alone. */
const SHARD_NAME = /^[0-9a-f]{2}$/;
const BLOCK_NAME = /^[0-9a-f]{64}$/;

/** After an eviction the cache holds at most this share of its limit (room for a boot's worth). */
const LOW_WATER = 0.9;
/** Temporary files older than this are leftovers of a killed writer. */
const STALE_TEMP_MS = 10 * 60_000;

/** Where in the cache directory objects live: blocks, or image manifests. */
export type CacheArea = 'blocks' | 'manifests';

export interface BlockCacheStatus {
  readonly dir: string;
  readonly blocks: number;
  readonly bytes: number;
  readonly maxBytes: number;
}

export class BlockCache {
  /** This process's running estimate of the bytes stored (rescanned on every eviction). */
  private bytes = 0;
  private readonly madeDirs = new Set<string>();
  private evicting: Promise<void> | undefined;
  /** Bytes put while an eviction scanned (the scan may have missed them). */
  private putDuringEviction = 0;
  /** Counters for stats: hits, misses, blocks stored, blocks found damaged. */
  readonly counters = { hits: 0, misses: 0, stored: 0, damaged: 0, evicted: 0 };

  private constructor(readonly dir: string, readonly maxBytes: number, private readonly area: CacheArea) {}

  /**
   * Opens (creating, owner-only) the cache in `dir`, bounded to `maxBytes`. `area` 'manifests'
   * opens the same store for image manifests (also named by their SHA-256), kept apart from the
   * blocks so that counts and limits stay about blocks.
   */
  static async open(dir: string, maxBytes: number, area: CacheArea = 'blocks'): Promise<BlockCache> {
    if (!(maxBytes > 0)) throw new RangeError(`block cache size must be positive, got ${maxBytes}`);
    // Private or refused: eviction and prune remove files under blocks/ (manifests/) and tmp/.
    await ensurePrivateDirectory(dir, { top: true });
    await ensurePrivateDirectory(path.join(dir, area));
    await ensurePrivateDirectory(path.join(dir, 'tmp'));
    const cache = new BlockCache(dir, maxBytes, area);
    cache.bytes = (await cache.scan()).reduce((sum, entry) => sum + entry.size, 0);
    return cache;
  }

  private blockPath(digest: string): string {
    return path.join(this.dir, this.area, digest.slice(0, 2), digest);
  }

  /**
   * The block with this SHA-256 (hex), verified, or undefined (absent, removed meanwhile, or
   * damaged: then it is deleted). A hit marks the block recently used.
   */
  async get(digest: string, expectedLength: number): Promise<Buffer | undefined> {
    const file = this.blockPath(digest);
    let data: Buffer;
    try {
      const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      try {
        data = Buffer.allocUnsafe(expectedLength);
        const { bytesRead } = await handle.read(data, 0, expectedLength, 0);
        if (bytesRead !== expectedLength || (await handle.stat()).size !== expectedLength) return this.damaged(file);
      } finally {
        await handle.close();
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        this.counters.misses++;
        return undefined;
      }
      if ((error as NodeJS.ErrnoException).code === 'ELOOP') return this.damaged(file); // a symlink is no block
      throw error;
    }
    if (createHash('sha256').update(data).digest('hex') !== digest) return this.damaged(file);
    this.counters.hits++;
    const now = new Date();
    utimes(file, now, now).catch(() => undefined); // recency for LRU; a removed file is no matter
    return data;
  }

  private async damaged(file: string): Promise<undefined> {
    this.counters.damaged++;
    this.counters.misses++;
    await rm(file, { force: true });
    return undefined;
  }

  /** Whether a block with this digest is stored (not verified: for planning, not for serving). */
  async has(digest: string): Promise<boolean> {
    return stat(this.blockPath(digest)).then(() => true, () => false);
  }

  /**
   * Stores `data` as the block `digest` (the caller verified it). Atomic: written under a
   * temporary name, then renamed. Not fsynced: after a power loss a block may be lost or damaged,
   * which get() detects; the cache is never the only copy.
   */
  async put(digest: string, data: Buffer): Promise<void> {
    const file = this.blockPath(digest);
    const shard = path.dirname(file);
    if (!this.madeDirs.has(shard)) {
      await mkdir(shard, { recursive: true, mode: 0o700 });
      this.madeDirs.add(shard);
    }
    const temp = path.join(this.dir, 'tmp', `${digest}.${process.pid}.${randomBytes(4).toString('hex')}`);
    await writeFile(temp, data, { mode: 0o600 });
    try {
      await rename(temp, file);
    } catch (error) {
      await rm(temp, { force: true });
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      // The shard was removed by a prune meanwhile: make it again once.
      this.madeDirs.delete(shard);
      return this.put(digest, data);
    }
    this.counters.stored++;
    this.bytes += data.length;
    if (this.evicting) this.putDuringEviction += data.length;
    if (this.bytes > this.maxBytes) await this.evict();
  }

  /** Removes least recently used blocks until the cache is under LOW_WATER × maxBytes. */
  evict(): Promise<void> {
    this.evicting ??= (async () => {
      // Again while puts during a pass left it over the limit.
      do await this.evictOnce(); while (this.bytes > this.maxBytes);
    })().finally(() => { this.evicting = undefined; });
    return this.evicting;
  }

  private async evictOnce(): Promise<void> {
    this.putDuringEviction = 0;
    const entries = await this.scan();
    let total = entries.reduce((sum, entry) => sum + entry.size, 0);
    const target = Math.floor(this.maxBytes * LOW_WATER);
    entries.sort((a, b) => a.usedMs - b.usedMs);
    for (const entry of entries) {
      if (total <= target) break;
      await rm(entry.file, { force: true });
      total -= entry.size;
      this.counters.evicted++;
    }
    this.bytes = total + this.putDuringEviction;
  }

  /** Every stored block with its size and last use. */
  private async scan(): Promise<Array<{ file: string; size: number; usedMs: number }>> {
    const entries: Array<{ file: string; size: number; usedMs: number }> = [];
    const blocks = path.join(this.dir, this.area);
    for (const shard of await readdir(blocks).catch(() => [] as string[])) {
      const shardDir = path.join(blocks, shard);
      if (!SHARD_NAME.test(shard) || !(await lstat(shardDir).catch(() => undefined))?.isDirectory()) continue;
      for (const name of await readdir(shardDir).catch(() => [] as string[])) {
        const file = path.join(shardDir, name);
        if (!BLOCK_NAME.test(name) || !name.startsWith(shard)) continue;
        const info = await lstat(file).catch(() => undefined); // a symlink is not followed, nor counted
        if (info?.isFile()) entries.push({ file, size: info.size, usedMs: info.mtimeMs });
      }
    }
    return entries;
  }

  async status(): Promise<BlockCacheStatus> {
    const entries = await this.scan();
    return { dir: this.dir, blocks: entries.length, bytes: entries.reduce((sum, entry) => sum + entry.size, 0), maxBytes: this.maxBytes };
  }

  /**
   * Removes temporary files of killed writers, and blocks until the cache holds at most
   * `keepBytes` (default: its limit). Returns what it removed.
   */
  async prune(keepBytes = this.maxBytes): Promise<{ blocks: number; bytes: number; temporaries: number }> {
    let temporaries = 0;
    const tmp = path.join(this.dir, 'tmp');
    for (const name of await readdir(tmp).catch(() => [] as string[])) {
      const file = path.join(tmp, name);
      const info = await lstat(file).catch(() => undefined);
      if (info && !info.isDirectory() && Date.now() - info.mtimeMs > STALE_TEMP_MS) {
        await rm(file, { force: true });
        temporaries++;
      }
    }
    const entries = (await this.scan()).sort((a, b) => a.usedMs - b.usedMs);
    let total = entries.reduce((sum, entry) => sum + entry.size, 0);
    let blocks = 0;
    let bytes = 0;
    for (const entry of entries) {
      if (total <= keepBytes) break;
      await rm(entry.file, { force: true });
      total -= entry.size;
      blocks++;
      bytes += entry.size;
    }
    this.bytes = total;
    return { blocks, bytes, temporaries };
  }
}
