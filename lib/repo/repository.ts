// The image repository: content-addressed blocks in packs, plus one immutable manifest per image
// version. Layout under the repository's storage (a directory, or an S3 bucket + prefix):
//   lazyboot-repository          marker with the format version
//   packs/pack-*.pack, *.idx     append-only block data and its index (digest → offset, length)
//   manifests/NAME/N.manifest    image NAME version N (encoded by manifest-codec)
//   objects/NAME/N/KIND/ID       named objects attached to a version (image-objects.ts: boot traces)
// Over 300 lines: the repository's one public class (read, import, commit, check), each method short.
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { BlockBackend } from '../block/backend.js';
import { DIGEST_BYTES, digestOf, isZeroDigest, type Manifest } from './manifest-format.js';
import { decodeManifest, encodeManifest } from './manifest-codec.js';
import { BlockCorrupt, BlockMissing, ImportFailed, RepositoryCorrupt, UnknownImage, VersionConflict } from './errors.js';
import { formatImageRef, isValidImageName, parseImageRef, validateImageName } from './image-name.js';
import { PackStore, type PackFile } from './pack-store.js';
import { ImageBackend, type ImageBackendOptions } from './image-backend.js';
import { BlockBatch } from './block-batch.js';
import { openRepositoryDirectory, openRepositoryStore } from './repository-marker.js';
import { openStorage, type StorageOptions } from './storage/open-storage.js';
import type { RepositoryStorage } from './storage/storage.js';
import { DEFAULT_BLOCK_SIZE, parseBlockSize } from './block-size.js';
import { LazybootError } from '../base/errors.js';
import { ImageObjects } from './image-objects.js';
import { StoredImageObjects } from './stored-image-objects.js';
import { BoundedMap } from '../base/bounded-map.js';

const MANIFEST_SUFFIX = '.manifest';
const MANIFEST_PATTERN = /^[1-9][0-9]{0,8}\.manifest$/;

export interface ImageSummary {
  readonly name: string;
  readonly version: number;
  readonly size: number;
  readonly blockSize: number;
  readonly created: string;
}

/** A repository file (or directory) that is damaged or does not belong there, and what is wrong. */
export interface Damage {
  readonly file: string;
  readonly problem: string;
}

export interface OpenOptions extends StorageOptions {
  /** Make a missing or empty directory (or bucket prefix) a repository (import does; readers refuse). Default true. */
  readonly create?: boolean;
}

export interface ImportOptions {
  /** Exact number of bytes the source yields. */
  readonly size: number;
  readonly blockSize?: number;
  readonly parent?: string;
  /** Called now and then with the number of source bytes consumed so far. */
  readonly onProgress?: (bytesRead: number) => void;
  /** Stops the import before its version is committed (the reason is thrown; the pack written so far is dropped). */
  readonly signal?: AbortSignal;
}

export interface ImportResult {
  readonly ref: string;
  readonly manifest: Manifest;
  readonly newBlocks: number;
  readonly presentBlocks: number;
  readonly zeroBlocks: number;
  readonly bytesStored: number;
}

export interface NewImage {
  readonly name: string;
  readonly size: number;
  readonly blockSize: number;
  readonly digests: Buffer;
  readonly parent?: string;
  /** Create exactly this version, or fail with VersionConflict (default: the next free one). */
  readonly version?: number;
  /** The write session committing it (kept in the manifest, see Manifest.session). */
  readonly session?: string;
}

export interface ImageCheck {
  readonly blocks: number;
  readonly zeroBlocks: number;
  /** Distinct stored blocks the image refers to. */
  readonly uniqueBlocks: number;
  readonly problems: string[];
}

/**
 * Decoded manifests kept, by their digest tables' bytes (a 10 GiB image in 64 KiB blocks: 5 MiB).
 * With the image backends of export-provider.ts this bounds what a `repo serve` holds per version;
 * the pack indexes (PackStore: one entry per distinct stored block, ~150 bytes each) grow with the
 * repository itself, not with the clients or the server's uptime.
 */
const MANIFEST_CACHE_BYTES = 256 * 1024 * 1024;

export class Repository {
  private readonly manifestCache = new BoundedMap<string, Manifest>(MANIFEST_CACHE_BYTES, (manifest) => manifest.digests.length + 256);
  /** The named objects attached to image versions (boot traces). */
  readonly objects: ImageObjects;

  /** `dir`: the repository's directory, or its `s3://BUCKET/PREFIX` URI. */
  private constructor(readonly dir: string, private readonly store: PackStore, readonly storage: RepositoryStorage) {
    this.objects = storage.isLocalDirectory ? new ImageObjects(dir) : new StoredImageObjects(storage);
  }

  /** `$XDG_DATA_HOME/lazyboot/repo`, else `~/.local/share/lazyboot/repo`. */
  static defaultDir(): string {
    const dataHome = process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
    return join(dataHome, 'lazyboot', 'repo');
  }

  /**
   * Opens the repository at `location` (a directory, or `s3://BUCKET/PREFIX`), checking its marker;
   * creates it if allowed and missing or empty.
   */
  static async open(location: string = Repository.defaultDir(), options: OpenOptions = {}): Promise<Repository> {
    const storage = await openStorage(location, options);
    const dir = storage.location;
    try {
      if (storage.isLocalDirectory) await openRepositoryDirectory(dir, options.create ?? true);
      else await openRepositoryStore(storage, options.create ?? true);
      return new Repository(dir, await PackStore.open(storage), storage);
    } catch (error) {
      await storage.close();
      if (error instanceof LazybootError) throw error;
      throw new RepositoryCorrupt(dir, `cannot be opened or created (${(error as Error).message})`, { cause: error });
    }
  }

  private manifestKey(name: string, version?: number): string {
    return version === undefined ? `manifests/${name}` : `manifests/${name}/${version}${MANIFEST_SUFFIX}`;
  }

  private manifestPath(name: string, version: number): string {
    return this.storage.describe(this.manifestKey(name, version));
  }

  /** Image names, sorted: the directories under manifests/ with a valid name (see listWithDamage for the rest). */
  async names(): Promise<string[]> {
    return (await this.manifestEntries()).filter((entry) => entry.isImage).map((entry) => entry.name);
  }

  private async manifestEntries(): Promise<Array<{ name: string; isImage: boolean; isDirectory: boolean }>> {
    const entries = await this.storage.list('manifests');
    return entries
      .filter((entry) => !entry.name.startsWith('.'))
      .map((entry) => ({ name: entry.name, isDirectory: entry.kind === 'directory', isImage: entry.kind === 'directory' && isValidImageName(entry.name) }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Versions of `name`, ascending; empty if there is no such image. */
  async versions(name: string): Promise<number[]> {
    let entries: string[];
    try {
      entries = (await this.storage.list(this.manifestKey(validateImageName(name)))).map((entry) => entry.name);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw error;
    }
    return entries
      .filter((entry) => MANIFEST_PATTERN.test(entry))
      .map((entry) => Number(entry.slice(0, -MANIFEST_SUFFIX.length)))
      .sort((a, b) => a - b);
  }

  /** Every readable version of every image. */
  async list(): Promise<ImageSummary[]> {
    return (await this.listWithDamage()).images;
  }

  /**
   * Every readable version of every image, and what was skipped: stray entries under manifests/,
   * manifests that do not decode, indexes that could not be loaded. Damage stays local to it.
   */
  async listWithDamage(): Promise<{ images: ImageSummary[]; damage: Damage[] }> {
    const images: ImageSummary[] = [];
    const damage: Damage[] = [];
    for (const entry of await this.manifestEntries()) {
      const path = this.storage.describe(this.manifestKey(entry.name));
      if (!entry.isImage) {
        damage.push({ file: path, problem: entry.isDirectory ? 'is not a valid image name' : 'is not an image directory' });
        continue;
      }
      for (const version of await this.versions(entry.name)) {
        try {
          const m = await this.resolve(formatImageRef(entry.name, version));
          images.push({ name: entry.name, version, size: m.size, blockSize: m.blockSize, created: m.created });
        } catch (error) {
          if (!(error instanceof RepositoryCorrupt)) throw error;
          damage.push({ file: error.file, problem: error.problem });
        }
      }
    }
    for (const [file, problem] of this.store.damage) damage.push({ file, problem });
    return { images, damage };
  }

  /** `name@N`, or the latest version for a bare `name`. */
  async resolveRef(ref: string): Promise<{ name: string; version: number }> {
    const parsed = parseImageRef(ref);
    if (parsed.version !== undefined) return { name: parsed.name, version: parsed.version };
    const versions = await this.versions(parsed.name);
    if (versions.length === 0) throw new UnknownImage(ref);
    return { name: parsed.name, version: versions[versions.length - 1]! };
  }

  async manifestBytes(ref: string): Promise<Buffer> {
    const { name, version } = await this.resolveRef(ref);
    let bytes: Buffer | undefined;
    try {
      bytes = await this.storage.get(this.manifestKey(name, version));
    } catch (error) {
      if (error instanceof LazybootError) throw error;
      throw new RepositoryCorrupt(this.manifestPath(name, version), `cannot be read (${(error as Error).message})`, { cause: error });
    }
    if (!bytes) throw new UnknownImage(ref);
    return bytes;
  }

  async resolve(ref: string): Promise<Manifest> {
    const { name, version } = await this.resolveRef(ref);
    const key = formatImageRef(name, version);
    const cached = this.manifestCache.get(key);
    if (cached) return cached;
    const bytes = await this.manifestBytes(key);
    let manifest: Manifest;
    try {
      manifest = decodeManifest(bytes);
    } catch (error) {
      throw new RepositoryCorrupt(this.manifestPath(name, version), `does not decode (${(error as Error).message})`, { cause: error });
    }
    if (manifest.name !== name || manifest.version !== version) {
      throw new RepositoryCorrupt(this.manifestPath(name, version), `names ${formatImageRef(manifest.name, manifest.version)} instead`);
    }
    this.manifestCache.set(key, manifest);
    return manifest;
  }

  /** The stored block, verified against its digest. The zero digest gives `expectedLength` zeros (default 64 KiB). */
  async readBlock(digest: Buffer, expectedLength?: number): Promise<Buffer> {
    if (isZeroDigest(digest)) return Buffer.alloc(expectedLength ?? DEFAULT_BLOCK_SIZE);
    const location = await this.store.locateFresh(digest);
    if (!location) throw new BlockMissing(digest.toString('hex'), `no pack index in ${this.store.dir} lists it${this.damageNote()}`);
    if (expectedLength !== undefined && location.length !== expectedLength) {
      throw new RepositoryCorrupt(location.pack.path, `holds block ${digest.toString('hex')} with ${location.length} bytes where ${expectedLength} are expected`);
    }
    const data = Buffer.allocUnsafe(location.length);
    await location.pack.readInto(data, 0, location.length, location.offset);
    if (!createHash('sha256').update(data).digest().equals(digest)) {
      throw new BlockCorrupt(digest.toString('hex'), location.pack.path, location.offset);
    }
    return data;
  }

  /** Bytes of the stored block, or undefined when no loaded index lists it (indexes are refreshed on a miss). */
  async storedLength(digest: Buffer): Promise<number | undefined> {
    return (await this.store.locateFresh(digest))?.length;
  }

  /** Whether the block is stored, from the indexes loaded so far (no refresh: for bulk queries). */
  holdsLoaded(digest: Buffer): boolean {
    return this.store.locate(digest) !== undefined;
  }

  /**
   * Before a write session refers to these stored blocks without sending them: keeps their packs
   * from being removed as unreferenced (PackStore.keepAlive); a pack found gone is forgotten, so
   * holdsLoaded then says its blocks are missing.
   */
  async keepAlive(digests: Iterable<Buffer>): Promise<void> {
    const packs = new Set<PackFile>();
    for (const digest of digests) {
      const pack = this.store.locate(digest)?.pack;
      if (pack) packs.add(pack);
    }
    await Promise.all([...packs].map((pack) => this.store.keepAlive(pack)));
  }

  /** Loads the indexes other writers added since (before a bulk query with holdsLoaded). */
  refreshIndexes(): Promise<void> {
    return this.store.refresh();
  }

  /** For "block missing" messages: the block may be in a pack whose index could not be loaded. */
  private damageNote(): string {
    const count = this.store.damage.size;
    return count === 0 ? '' : `; ${count} ${count === 1 ? 'index' : 'indexes'} could not be loaded, see \`lazyboot repo check\``;
  }

  /** A read-only backend serving the image; zero blocks are holes. */
  imageBackend(manifest: Manifest, options?: ImageBackendOptions): BlockBackend {
    return new ImageBackend(manifest, this.store, options);
  }

  /** Starts adding blocks; seal with commitImage (or abort). */
  beginBlocks(): BlockBatch {
    return new BlockBatch(this.store.beginPack());
  }

  /**
   * Seals `batch` (its blocks become durable and visible), then writes the manifest of the next
   * version of `image.name`. Every non-zero digest must be stored (in this batch or before).
   */
  async commitImage(image: NewImage, batch?: BlockBatch): Promise<Manifest> {
    validateImageName(image.name);
    const blockSize = parseBlockSize(image.blockSize);
    await batch?.seal();
    const blockCount = Math.ceil(image.size / blockSize);
    if (image.digests.length !== blockCount * DIGEST_BYTES) throw new ImportFailed(`digest table of ${image.name} does not match its size`);
    for (let index = 0; index < blockCount; index++) {
      const digest = image.digests.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
      if (!isZeroDigest(digest) && !(await this.store.locateFresh(digest))) {
        throw new BlockMissing(digest.toString('hex'), `block ${index} of the new version of ${image.name}`);
      }
    }
    const versions = await this.versions(image.name);
    for (let version = image.version ?? (versions[versions.length - 1] ?? 0) + 1; ; version++) {
      const manifest: Manifest = {
        name: image.name,
        version,
        size: image.size,
        blockSize,
        blockCount,
        digests: Buffer.from(image.digests),
        created: new Date().toISOString(),
        ...(image.parent !== undefined ? { parent: image.parent } : {}),
        ...(image.session !== undefined ? { session: image.session } : {}),
      };
      // Another writer may take the same version number: the create-only write (link(), or a PUT
      // with If-None-Match: *) refuses, and we try the next (or, when this exact version was asked
      // for, report the conflict).
      if (await this.createManifest(image.name, version, encodeManifest(manifest))) {
        this.manifestCache.set(formatImageRef(image.name, version), manifest);
        return manifest;
      }
      if (image.version !== undefined) throw new VersionConflict(formatImageRef(image.name, version));
    }
  }

  private async createManifest(name: string, version: number, bytes: Buffer): Promise<boolean> {
    try {
      return await this.storage.putIfAbsent(this.manifestKey(name, version), bytes);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST' && code !== 'ENOTDIR') throw error;
      // A stray file under manifests/ with the image's name: only this image is blocked.
      throw new ImportFailed(`${this.storage.describe(this.manifestKey(name))} is in the way (a file where image ${name}'s directory belongs)`, 'move it out of the repository (`lazyboot repo check` lists such files), or use another name');
    }
  }

  /** Imports a raw byte stream of exactly `options.size` bytes as the next version of `name`. */
  async importImage(name: string, source: AsyncIterable<Buffer>, options: ImportOptions): Promise<ImportResult> {
    validateImageName(name);
    const blockSize = parseBlockSize(options.blockSize ?? DEFAULT_BLOCK_SIZE);
    const blockCount = Math.ceil(options.size / blockSize);
    const digests = Buffer.alloc(blockCount * DIGEST_BYTES);
    const batch = this.beginBlocks();
    const block = Buffer.allocUnsafe(blockSize);
    let filled = 0;
    let index = 0;
    let bytesRead = 0;
    const putBlock = async (length: number): Promise<void> => {
      if (index >= blockCount) throw new ImportFailed(`the source yields more than the expected ${options.size} bytes`);
      const { digest } = await batch.put(block.subarray(0, length));
      digest.copy(digests, index * DIGEST_BYTES);
      index++;
    };
    try {
      for await (const chunk of source) {
        let at = 0;
        while (at < chunk.length) {
          const take = Math.min(blockSize - filled, chunk.length - at);
          chunk.copy(block, filled, at, at + take);
          filled += take;
          at += take;
          if (filled === blockSize) {
            await putBlock(blockSize);
            filled = 0;
          }
        }
        bytesRead += chunk.length;
        options.onProgress?.(bytesRead);
        options.signal?.throwIfAborted();
      }
      if (filled > 0) await putBlock(filled);
      options.signal?.throwIfAborted();
      if (bytesRead !== options.size) throw new ImportFailed(`the source yielded ${bytesRead} bytes, expected ${options.size}`);
      const manifest = await this.commitImage({ name, size: options.size, blockSize, digests, parent: options.parent }, batch);
      return {
        ref: formatImageRef(manifest.name, manifest.version),
        manifest,
        newBlocks: batch.newBlocks,
        presentBlocks: batch.presentBlocks,
        zeroBlocks: batch.zeroBlocks,
        bytesStored: batch.bytesStored,
      };
    } catch (error) {
      await batch.abort();
      throw error;
    }
  }

  /** Checks that every block of the image is stored where the index says (and, with `verify`, hashes them). */
  async checkImage(manifest: Manifest, options: { verify?: boolean } = {}): Promise<ImageCheck> {
    const problems: string[] = [];
    const seen = new Set<string>();
    let zeroBlocks = 0;
    for (let index = 0; index < manifest.blockCount; index++) {
      const digest = digestOf(manifest, index);
      if (isZeroDigest(digest)) {
        zeroBlocks++;
        continue;
      }
      const key = digest.toString('latin1');
      if (seen.has(key)) continue;
      seen.add(key);
      const expected = Math.min(manifest.blockSize, manifest.size - index * manifest.blockSize);
      try {
        if (options.verify) {
          await this.readBlock(digest, expected);
        } else {
          const location = await this.store.locateFresh(digest);
          if (!location) throw new BlockMissing(digest.toString('hex'), `block ${index}`);
          const probe = Buffer.allocUnsafe(1);
          await location.pack.readInto(probe, 0, 1, location.offset + location.length - 1);
        }
      } catch (error) {
        if (!(error instanceof LazybootError)) throw error;
        problems.push(error.message);
        if (problems.length >= 20) break;
      }
    }
    return { blocks: manifest.blockCount, zeroBlocks, uniqueBlocks: seen.size, problems };
  }

  async close(): Promise<void> {
    await this.store.close();
    await this.storage.close();
  }
}
