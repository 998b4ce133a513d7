// The host-wide block cache only works in a directory private to its user: a `blocks/` or `tmp/`
// that is a symlink, or a directory another user owns or may write, is refused before anything is
// read, written or removed (`cache prune` once deleted the files two levels below a symlinked
// `blocks/`). Inside the cache, only files named as blocks are counted, evicted or pruned.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN } from './helpers/disk-serve.js';
import { BlockCache } from '../lib/cache/block-cache.js';

async function prune(cacheDir: string) {
  return execa('node', [BIN, 'cache', 'prune', '--dir', cacheDir, '--keep', '0'], { reject: false });
}

/** A directory tree of someone's files that must survive whatever the cache does. */
async function victim(dir: string): Promise<string> {
  const root = join(dir, 'victim');
  await mkdir(join(root, 'docs'), { recursive: true });
  await writeFile(join(root, 'docs', 'thesis.txt'), 'important');
  return root;
}

for (const sub of ['blocks', 'tmp']) {
  test(`a cache whose ${sub}/ is a symlink is refused, and nothing it points to is removed`, (t) => withDir(async ({ path: dir }) => {
    const cacheDir = join(dir, 'cache');
    await mkdir(cacheDir, { mode: 0o700 });
    const target = await victim(dir);
    await symlink(target, join(cacheDir, sub));
    const result = await prune(cacheDir);
    t.is(result.exitCode, 1);
    t.is(result.stderr.trim().split('\n').length, 1, result.stderr);
    t.regex(result.stderr, new RegExp(`${sub} is a symlink`));
    t.deepEqual(await readdir(join(target, 'docs')), ['thesis.txt']);
  }, { unsafeCleanup: true }));
}

test('a cache directory others may write, or another user owns, is refused with what to do', (t) => withDir(async ({ path: dir }) => {
  const open = join(dir, 'open');
  await mkdir(open);
  await chmod(open, 0o777);
  const writable = await prune(open);
  t.is(writable.exitCode, 1);
  t.regex(writable.stderr, /writable by other users \(mode 0777\).*chmod 700/);
  if (process.getuid?.() === 0) {
    const theirs = join(dir, 'theirs');
    await mkdir(theirs, { mode: 0o700 });
    await chown(theirs, 65534, 65534);
    const owned = await prune(theirs);
    t.is(owned.exitCode, 1);
    t.regex(owned.stderr, /owned by user 65534/);
  }
}, { unsafeCleanup: true }));

test('prune and eviction remove only block files: a symlink or a stray file in a shard stays untouched', (t) => withDir(async ({ path: dir }) => {
  const cacheDir = join(dir, 'cache');
  const cache = await BlockCache.open(cacheDir, 64 * 1024 * 1024);
  const data = randomBytes(4096);
  const digest = createHash('sha256').update(data).digest('hex');
  await cache.put(digest, data);
  const target = await victim(dir);
  const shard = join(cacheDir, 'blocks', digest.slice(0, 2));
  await symlink(join(target, 'docs', 'thesis.txt'), join(shard, 'f'.repeat(64)));
  await symlink(join(target, 'docs'), join(cacheDir, 'blocks', 'ff'));
  t.like(await cache.status(), { blocks: 1, bytes: 4096 });
  t.like(await cache.prune(0), { blocks: 1 });
  t.deepEqual(await readdir(join(target, 'docs')), ['thesis.txt']);
}, { unsafeCleanup: true }));
