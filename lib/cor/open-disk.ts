// Opening the local state of a copy-on-read disk without serving it: the repositories, the
// host cache, the disk (locked, created sparse when new) and its map (checked against the image
// and the disk), and the COR backend over them. The device (device.ts) serves what this opens.
import { access, rm } from 'node:fs/promises';
import { BlockMap } from '../map/block-map.js';
import { MapMismatch } from '../map/errors.js';
import { openRepositories, type OpenedRepositories } from '../fetch/open-repositories.js';
import { openBlockCache, openCachedUpstream } from '../cache/open-cache.js';
import type { CachedUpstream } from '../cache/cached-upstream.js';
import { describeFetchError, type FetchErrorEvent } from '../fetch/failover.js';
import { asLazybootError } from '../base/system-error.js';
import { LocalDisk } from './local-disk.js';
import { CorBackend } from './cor-backend.js';
import { lockDisk, type DiskLock } from './disk-lock.js';
import { certifyDisk, checkDiskBinding } from './disk-binding.js';
import type { CorDeviceOptions } from './device.js';

/** Start the fetching threads at open when at least this much is still to fetch. */
const PRESTART_FETCHERS_BYTES = 64 * 1024 * 1024;

/** The local state of a disk: repositories + local disk + map + COR backend (no server). */
export interface OpenedDisk {
  readonly repositories: OpenedRepositories;
  /** The local raw disk the backend stores into (its only writer while open). */
  readonly local: LocalDisk;
  readonly backend: CorBackend;
  /** The upstream through the host-wide block cache, when the cache is on. */
  readonly cached: CachedUpstream | undefined;
  close(): Promise<void>;
}

export function mapPathOf(disk: string): string {
  return `${disk}.map`;
}

/** Opens (or creates) the disk and its map for `image`; refuses a map of another image. */
export async function openDisk(options: Pick<CorDeviceOptions, 'image' | 'disk' | 'from' | 's3Endpoint' | 'log' | 'fetchTimeoutMs' | 'fetchAheadBytes' | 'cache'>, onFetchError?: (event: FetchErrorEvent) => void): Promise<OpenedDisk> {
  const log = options.log ?? (() => {});
  // The host cache keeps the manifest too: a second boot of the image on this host fetches none of it.
  const manifestCache = options.cache ? await openBlockCache(options.cache, 'manifests') : undefined;
  const repositories = await openRepositories(options.from, options.image, {
    manifestStore: manifestCache,
    s3Endpoint: options.s3Endpoint,
    timeoutMs: options.fetchTimeoutMs,
    log,
    onFetchError: (event) => {
      log(describeFetchError(event));
      onFetchError?.(event);
    },
  });
  let local: LocalDisk | undefined;
  let lock: DiskLock | undefined;
  let cached: CachedUpstream | undefined;
  try {
    lock = await lockDisk(options.disk);
    const { manifest, manifestDigest } = repositories;
    if (options.cache) cached = await openCachedUpstream(repositories.upstream, manifest, options.cache, log);
    const imageRef = `${manifest.name}@${manifest.version}`;
    const mapPath = mapPathOf(options.disk);
    const mapExists = await access(mapPath).then(() => true, () => false);
    // The map is checked before the disk: "belongs to image X" says more than "wrong size".
    const syncData = () => local!.flush();
    let map: BlockMap | undefined;
    if (mapExists) {
      map = await BlockMap.open(mapPath, syncData, { image: imageRef, blockSize: manifest.blockSize, blockCount: manifest.blockCount });
      if (map.header.manifestDigest !== manifestDigest) {
        await map.close();
        throw new MapMismatch(mapPath, 'manifest', manifestDigest.slice(0, 16), map.header.manifestDigest.slice(0, 16));
      }
      if (map.recovered) log(`map ${mapPath}: recovered (${map.recovery})`);
    }
    try {
      // With a map, the disk must exist: a new sparse file is not the disk the map describes.
      local = await LocalDisk.openOrCreate(options.disk, manifest.size, { create: !map });
      await lock.holdIdentity(await local.identity());
      if (map) await checkDiskBinding(map, local, log);
    } catch (error) {
      await map?.close(); // unchanged: nothing is written
      throw error;
    }
    const disk = local;
    if (!map) {
      if (!disk.created) log(`${options.disk} has no map: every block counts as absent and will be fetched`);
      map = await BlockMap.create(mapPath, {
        image: imageRef, manifestDigest, size: manifest.size, blockSize: manifest.blockSize,
        blockCount: manifest.blockCount, targets: ['origin'], diskCreatedSparse: disk.created,
        disk: { identity: await disk.identity() },
      }, syncData);
    }
    const backend = new CorBackend(manifest, disk, map, cached ?? repositories.upstream, { log, fetchAheadBytes: options.fetchAheadBytes });
    // With much left to fetch, the fetch worker (or the hashers) start now, not during the
    // guest's first reads; with little, they may never be needed (~15-20 MiB each).
    if (backend.absentDataBlocks() * manifest.blockSize >= PRESTART_FETCHERS_BYTES) repositories.prestart();
    const heldLock = lock;
    return {
      repositories, local: disk, backend, cached,
      async close() {
        try {
          // Certified after the last guest write has landed (the server is closed, but requests it
          // started may still run); a later change (a fetch storing) voids it again.
          await backend.whenGuestIdle();
          // After a pivot QEMU wrote the disk too: this map no longer vouches for its content.
          if (!backend.isReadThrough) await certifyDisk(backend.map, disk, manifest).catch((error: Error) => log(`${options.disk}: no fingerprint recorded: ${error.message}`));
          await backend.close();
        } finally {
          await cached?.close();
          await repositories.close();
          await heldLock.release();
        }
      },
    };
  } catch (error) {
    await local?.close();
    await cached?.close();
    // A disk this call created and left without a map holds nothing: do not leave it behind.
    if (local?.created && !(await access(mapPathOf(options.disk)).then(() => true, () => false))) await rm(options.disk, { force: true });
    await repositories.close();
    await lock?.release();
    // A failed write to the disk or its map (a full file system) names neither: say which.
    throw asLazybootError(error, { path: options.disk, subject: `${options.disk} (or its map)` }) ?? error;
  }
}
