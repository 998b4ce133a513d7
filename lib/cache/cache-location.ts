// Where the host-wide block cache lives and how large it may grow by default, and when the CLI
// uses it: one directory per user and host, `$XDG_CACHE_HOME/lazyboot/blocks` (else
// `~/.cache/lazyboot/blocks`), bounded by default to a tenth of the space free on its filesystem.
import { mkdir, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isNbdUri } from '../nbd/client.js';
import { isS3Uri } from '../repo/storage/open-storage.js';

/** The default limit: this share of the free space where the cache lives … */
const DEFAULT_SHARE_OF_FREE = 0.1;
/** … but never less than this (a few boots' worth of blocks). */
const MIN_DEFAULT_BYTES = 256 * 1024 * 1024;

export interface BlockCacheOptions {
  /** Cache directory (default: defaultCacheDir()). */
  readonly dir?: string;
  /** Size limit in bytes (default: defaultCacheBytes(dir)). */
  readonly maxBytes?: number;
}

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache');
  return path.join(base, 'lazyboot', 'blocks');
}

export async function defaultCacheBytes(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const fs = await statfs(dir);
  return Math.max(MIN_DEFAULT_BYTES, Math.floor(fs.bavail * fs.bsize * DEFAULT_SHARE_OF_FREE));
}

/**
 * The CLI's default: the cache is used when a repository is reached over the network, over NBD
 * (unix socket or TCP) or straight from an S3 store; repositories that are all local directories
 * already have every block on this host.
 */
export function cacheByDefault(from: readonly string[]): boolean {
  return from.some((uri) => isNbdUri(uri) || isS3Uri(uri));
}
