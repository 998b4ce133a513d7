// One error tree: every error a user may see is a LazybootError the CLI prints as one line, the
// block layer's BlockError included, and real failed system calls on a file become one too.
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { withDir } from 'tmp-promise';
import { LazybootError } from '../lib/base/errors.js';
import { asLazybootError, FileSystemFailed } from '../lib/base/system-error.js';
import { BlockError } from '../lib/block/backend.js';

test('a BlockError is a LazybootError: its code for NBD clients, its line for people', (t) => {
  const error = new BlockError('EIO', 'NBD connection to nbd://repo closed', { hint: 'check that the repository runs' });
  t.true(error instanceof LazybootError);
  t.is(error.code, 'EIO');
  t.is(error.name, 'BlockError');
  t.is(error.toLine(), 'NBD connection to nbd://repo closed: check that the repository runs');
  t.is(new BlockError('ENOSPC', 'beyond the end').toLine(), 'beyond the end');
  t.is(asLazybootError(error), error);
});

test('failed system calls on a file become one line naming the file and what to do', (t) => withDir(async ({ path: dir }) => {
  const missing = join(dir, 'no-such-dir', 'disk.raw');
  const enoent = await open(missing, 'r').catch((error: unknown) => error);
  t.is(asLazybootError(enoent)!.toLine(), `cannot open ${missing}: no such file or directory (ENOENT): check that ${join(dir, 'no-such-dir')} exists and is a directory`);
  await mkdir(join(dir, 'a-dir'));
  const eisdir = await open(join(dir, 'a-dir'), 'r+').catch((error: unknown) => error);
  t.true(asLazybootError(eisdir) instanceof FileSystemFailed);
  t.regex(asLazybootError(eisdir)!.toLine(), /: is a directory \(EISDIR\): name a file, not a directory$/);
  await writeFile(join(dir, 'file'), 'x');
  const enotdir = await open(join(dir, 'file', 'disk.raw'), 'r').catch((error: unknown) => error);
  t.regex(asLazybootError(enotdir)!.message, /^cannot open .*file\/disk\.raw: a part of the path is not a directory \(ENOTDIR\)$/);
}, { unsafeCleanup: true }));

test('an error of no known kind stays what it is (the CLI calls it unexpected)', (t) => {
  t.is(asLazybootError(new TypeError('x is undefined')), undefined);
  t.is(asLazybootError('a string'), undefined);
});
