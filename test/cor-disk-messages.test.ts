// `lazyboot disk` errors a careless user meets, each one line with what to do and exit 1.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { access, mkdir, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { corruptStoredBlock, makeImage } from './cor-fixtures.js';
import { BIN, serveDisk } from './helpers/disk-serve.js';

const BS = 65536;
const lazyboot = (args: string[]) => execa('node', [BIN, ...args], { reject: false });

test('disk fill on a damaged block names the block and the repository, says what to do; the map stays readable', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 16 * BS });
  await corruptStoredBlock(image.repoDir, image.content.subarray(2 * BS, 3 * BS)); // block 2 holds random data
  const disk = join(dir, 'disk.raw');
  const fill = await lazyboot(['disk', 'fill', '--disk', disk, '--image', 'demo', '--from', image.repoDir]);
  t.is(fill.exitCode, 1);
  const lines = fill.stderr.split('\n').filter((line) => line.startsWith('lazyboot: '));
  t.is(lines.length, 1, fill.stderr);
  t.regex(lines[0]!, /^lazyboot: fill of [^\n]*disk\.raw stopped: [^\n]*block 2 from [^\n]*repo does not match its SHA-256 digest[^\n]*: [^\n]*repo holds a damaged copy of block 2 of demo@1: [^\n]*re-import the image/);
  t.notRegex(fill.stderr, /unexpected error/);
  const status = await lazyboot(['disk', 'status', '--disk', disk, '--json']);
  t.is(status.exitCode, 0, status.stderr);
}, { unsafeCleanup: true }));

test('a fresh map reopens without a "recovered" line', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  for (let run = 0; run < 2; run++) {
    const served = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir]);
    if (!served.serving) return t.fail(served.stderr);
    await served.stop();
    t.notRegex(served.stderr(), /recovered/);
  }
}, { unsafeCleanup: true }));

test('a directory, a truncated disk and a grown disk as --disk are refused in one line', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const folder = join(dir, 'folder');
  await mkdir(folder);
  const refusals: Array<[string, RegExp]> = [[folder, /folder is neither a regular file nor a block device: /]];
  const disk = join(dir, 'disk.raw');
  const first = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir]);
  if (!first.serving) return t.fail(first.stderr);
  await first.stop();
  for (const size of [4 * BS, 9 * BS]) {
    const copy = join(dir, `disk-${size}.raw`);
    await execa('cp', [disk, copy]);
    await truncate(copy, size);
    refusals.push([copy, new RegExp(`is ${size} bytes but the image is ${8 * BS} bytes: `)]);
  }
  for (const [path, line] of refusals) {
    const served = await serveDisk(['demo', '--disk', path, '--from', image.repoDir]);
    if (served.serving) { await served.stop(); t.fail(`${path} was served`); continue; }
    t.is(served.exitCode, 1);
    t.regex(served.stderr, /^lazyboot: [^\n]+\n$/);
    t.regex(served.stderr, line);
  }
}, { unsafeCleanup: true }));

test('disk fill with a bad --rate is refused before anything is opened or created', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  const fill = await lazyboot(['disk', 'fill', '--disk', disk, '--image', 'demo', '--from', image.repoDir, '--rate', 'fast']);
  t.is(fill.exitCode, 1);
  t.is(fill.stderr, 'lazyboot: invalid rate "fast": use bytes per second like 50M, 800K or 0 for unlimited');
  await t.throwsAsync(access(disk), { code: 'ENOENT' });
  await t.throwsAsync(access(`${disk}.map`), { code: 'ENOENT' });
}, { unsafeCleanup: true }));
