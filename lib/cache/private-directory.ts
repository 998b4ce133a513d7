// The block cache's directories must be the user's own: a `blocks/` that is a symlink, or a
// directory another user owns or may write, would let someone else choose which files lazyboot
// writes and (on eviction or `cache prune`) removes. Checked with lstat, before any use.
import { lstat, mkdir, realpath } from 'node:fs/promises';
import path from 'node:path';
import { LazybootError } from '../base/errors.js';

/** The cache directory (or one of its parts) is not private to this user. */
export class CacheNotPrivate extends LazybootError {}

/**
 * Creates `dir` (0700) if missing and checks it: a real directory (not a symlink) owned by this
 * user and writable by no one else. `top` is the cache directory itself, which may be reached
 * through a symlink the user made (e.g. ~/.cache on another disk): its real path is checked.
 */
export async function ensurePrivateDirectory(dir: string, options: { top?: boolean } = {}): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const checked = options.top ? await realpath(dir) : dir;
  const info = await lstat(checked);
  const name = options.top ? checked : path.basename(dir);
  const fix = 'use a directory of your own (mkdir -m 700), or --no-cache';
  if (info.isSymbolicLink()) throw new CacheNotPrivate(`block cache ${path.dirname(dir)}: ${name} is a symlink`, `remove it (lazyboot makes it again); ${fix}`);
  if (!info.isDirectory()) throw new CacheNotPrivate(`block cache ${checked} is not a directory`, fix);
  const uid = process.getuid?.();
  if (uid !== undefined && info.uid !== uid) throw new CacheNotPrivate(`block cache ${checked} is owned by user ${info.uid}, not by you (${uid})`, fix);
  if (info.mode & 0o022) {
    throw new CacheNotPrivate(`block cache ${checked} is writable by other users (mode 0${(info.mode & 0o777).toString(8)})`, `chmod 700 ${checked}, or ${fix}`);
  }
  return checked;
}
