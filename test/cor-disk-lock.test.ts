// The disk lock as users meet it: real `lazyboot disk serve` processes on one disk. The kernel
// holds the lock (an abstract unix socket), so there is no stale lock file to guess about.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { access, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeImage, qemuIo } from './cor-fixtures.js';
import { serveDisk, type ServeOutcome } from './helpers/disk-serve.js';

const BS = 65536;
const CONTENDERS = 6;

test('of many processes started at once on one disk exactly one serves; each other exits 1 naming it', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  const outcomes = await Promise.all(Array.from({ length: CONTENDERS }, () => serveDisk(['demo', '--disk', disk, '--from', image.repoDir])));
  const winners = outcomes.filter((o): o is Extract<ServeOutcome, { serving: true }> => o.serving);
  try {
    t.is(winners.length, 1);
    const holder = winners[0]!.child.pid;
    for (const loser of outcomes.filter((o): o is Extract<ServeOutcome, { serving: false }> => !o.serving)) {
      t.is(loser.exitCode, 1);
      t.is(loser.stderr, `lazyboot: ${disk} is in use by process ${holder}: stop that process first (one lazyboot process per disk)\n`);
    }
    await qemuIo(winners[0]!.uri, [`read 0 ${BS}`]);
  } finally {
    await Promise.all(winners.map((w) => w.stop()));
  }
}, { unsafeCleanup: true }));

test('a holder killed with SIGKILL frees the disk at once', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  const args = ['demo', '--disk', disk, '--from', image.repoDir];
  const first = await serveDisk(args);
  if (!first.serving) return t.fail(first.stderr);
  await first.stop('SIGKILL');
  // No wait, no retry: the kernel released the name when the process died.
  const second = await serveDisk(args);
  if (!second.serving) return t.fail(second.stderr);
  await qemuIo(second.uri, [`read -P 0 ${BS} ${BS}`]); // block 1 is a zero block
  await second.stop();
  t.pass();
}, { unsafeCleanup: true }));

test('a lock file left with the PID of a live unrelated process does not block the disk', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  // This test's own PID: alive, and not a lazyboot disk process (the old lock trusted it forever).
  await writeFile(`${disk}.lock`, `${process.pid}\n`);
  const served = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir]);
  if (!served.serving) return t.fail(served.stderr);
  await served.stop();
  t.pass();
}, { unsafeCleanup: true }));

test('a --disk in a directory that does not exist is one clear line, and nothing is created', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const served = await serveDisk(['demo', '--disk', join(dir, 'missing', 'disk.raw'), '--from', image.repoDir]);
  if (served.serving) { await served.stop(); return t.fail('served'); }
  t.is(served.exitCode, 1);
  t.is(served.stderr, `lazyboot: cannot use ${join(dir, 'missing', 'disk.raw')}: its directory ${join(dir, 'missing')} does not exist: create the directory first, or pass another --disk\n`);
  await t.throwsAsync(access(join(dir, 'missing')), { code: 'ENOENT' });
}, { unsafeCleanup: true }));
