// Opens the host-wide block cache for one device: the store and its fetch claims in the chosen (or
// default) directory, wrapped around the device's verified, failing-over upstream.
import type { BlockBackend } from '../block/backend.js';
import type { Manifest } from '../repo/manifest-format.js';
import { BlockCache, type CacheArea } from './block-cache.js';
import { CachedUpstream } from './cached-upstream.js';
import { defaultCacheBytes, defaultCacheDir, type BlockCacheOptions } from './cache-location.js';
import { FetchClaims } from './fetch-claims.js';
import { SpeculationPeers } from './speculation-peers.js';

export async function openBlockCache(options: BlockCacheOptions = {}, area: CacheArea = 'blocks'): Promise<BlockCache> {
  const dir = options.dir ?? defaultCacheDir();
  return BlockCache.open(dir, options.maxBytes ?? (await defaultCacheBytes(dir)), area);
}

export async function openCachedUpstream(upstream: BlockBackend, manifest: Manifest, options: BlockCacheOptions, log: (line: string) => void): Promise<CachedUpstream> {
  const cache = await openBlockCache(options);
  const claims = await FetchClaims.open(cache.dir);
  return new CachedUpstream(upstream, manifest, cache, claims, log, await SpeculationPeers.open(cache.dir));
}
