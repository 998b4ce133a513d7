// The host-wide block cache's flags, shared by `boot`, `run`, `disk serve` and `disk fill`:
// `--cache DIR` picks the directory, `--no-cache` turns it off, `--cache-size` bounds it. Without
// a flag the cache is on when a repository is reached over NBD or S3 (see cacheByDefault).
import type { Argv } from 'yargs';
import { cacheByDefault, defaultCacheDir, type BlockCacheOptions } from '../cache/cache-location.js';
import { parseSizeBytes } from './units.js';

export interface CacheArgs {
  /** A directory, or false for --no-cache. */
  cache?: string | false;
  'cache-size'?: string;
}

export function cacheOptions<T>(y: Argv<T>): Argv<T & CacheArgs> {
  return y
    .option('cache', { type: 'string', describe: 'host-wide block cache directory, shared by every VM of this user (--no-cache: none)', defaultDescription: `${defaultCacheDir()} when a repository is reached over NBD or S3` })
    .option('cache-size', { type: 'string', describe: 'block cache size limit (e.g. 20G); least recently used blocks go first', defaultDescription: 'a tenth of the free space' }) as unknown as Argv<T & CacheArgs>;
}

/** The device's cache option for these flags and repositories (undefined: no cache). */
export function cacheOf(args: CacheArgs, from: readonly string[]): BlockCacheOptions | undefined {
  if (args.cache === false) return undefined;
  const maxBytes = args['cache-size'] === undefined ? undefined : parseSizeBytes(args['cache-size']);
  if (args.cache === undefined && !cacheByDefault(from)) return undefined;
  return { dir: args.cache || undefined, maxBytes };
}
