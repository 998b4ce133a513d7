// A map is bound to its disk: a map that outlived its disk (deleted, recreated, replaced) is
// refused in one line and nothing is written; a clean stop lets both files be copied or moved.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { access, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { makeImage, nbdcopyTo, qemuIo, type TestImage } from './cor-fixtures.js';
import { BIN, serveDisk } from './helpers/disk-serve.js';
import { BlockMap } from '../lib/map/block-map.js';

const BS = 65536;
const BLOCKS = 16;

/** The image's bytes with block `block` filled with `byte` (a guest's write). */
function written(image: TestImage, block: number, byte: number): Buffer {
  return Buffer.from(image.content).fill(byte, block * BS, (block + 1) * BS);
}

/** Serves, reads blocks 0..7 and writes block 3 (flushed), then stops with `signal`. */
async function useDisk(image: TestImage, disk: string, signal: NodeJS.Signals): Promise<void> {
  const served = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir]);
  if (!served.serving) throw new Error(served.stderr);
  await qemuIo(served.uri, [`read 0 ${8 * BS}`, `write -P 0x77 ${3 * BS} ${BS}`, 'flush']);
  await served.stop(signal);
}

/** Serves `disk` and expects a refusal: one line matching `line`, exit 1, files untouched. */
async function expectRefused(t: import('ava').ExecutionContext, image: TestImage, disk: string, line: RegExp): Promise<void> {
  const mapBefore = await readFile(`${disk}.map`);
  const diskBefore = await readFile(disk).catch(() => undefined);
  const served = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir]);
  if (served.serving) {
    await served.stop();
    t.fail('a stale map was served');
    return;
  }
  t.is(served.exitCode, 1);
  t.regex(served.stderr, /^lazyboot: [^\n]+\n$/);
  t.regex(served.stderr, line);
  t.true((await readFile(`${disk}.map`)).equals(mapBefore), 'the map was written');
  if (diskBefore) t.true((await readFile(disk)).equals(diskBefore), 'the disk was written');
  else await t.throwsAsync(access(disk), { code: 'ENOENT' }, 'a disk was created');
}

async function expectImage(t: import('ava').ExecutionContext, disk: string, repoDir: string, expected: Buffer, out: string): Promise<string> {
  const served = await serveDisk(['demo', '--disk', disk, '--from', repoDir]);
  if (!served.serving) throw new Error(served.stderr);
  try {
    await nbdcopyTo(served.uri, out);
  } finally {
    await served.stop();
  }
  t.true((await readFile(out)).equals(expected), 'the served disk differs from the image');
  return served.stderr();
}

test('a deleted disk whose map is kept is refused; no disk is created', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'disk.raw');
  await useDisk(image, disk, 'SIGTERM');
  // What the map says is present (the blocks read, and those fetched ahead of the read).
  const before = JSON.parse((await execa('node', [BIN, 'disk', 'status', '--disk', disk, '--json'])).stdout) as { presentBlocks: number };
  t.true(before.presentBlocks >= 8);
  await rm(disk);
  await expectRefused(t, image, disk, /disk\.raw is missing but its map [^\n]*: put the disk back, or delete [^\n]*disk\.raw\.map to start over/);
  const status = await execa('node', [BIN, 'disk', 'status', '--disk', disk, '--json']);
  t.like(JSON.parse(status.stdout), { diskMissing: true, presentBlocks: before.presentBlocks });
}, { unsafeCleanup: true }));

test('a disk deleted and recreated empty (often the same inode number) is refused', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'disk.raw');
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    await rm(disk, { force: true });
    await rm(`${disk}.map`, { force: true });
    await useDisk(image, disk, signal);
    await rm(disk);
    await execa('truncate', ['-s', String(BLOCKS * BS), disk]);
    // Stopped cleanly: the map's fingerprint does not match; killed: the file is another one.
    await expectRefused(t, image, disk, signal === 'SIGTERM' ? /disk\.raw\.map does not describe [^\n]*content differs/ : /disk\.raw\.map does not describe [^\n]*another file[^\n]*not stopped cleanly/);
  }
}, { unsafeCleanup: true }));

test('a disk replaced by another file of the same size is refused', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'disk.raw');
  await useDisk(image, disk, 'SIGTERM');
  const other = join(dir, 'other.raw');
  await writeFile(other, randomBytes(BLOCKS * BS));
  await rename(other, disk);
  await expectRefused(t, image, disk, /disk\.raw\.map does not describe [^\n]*content differs/);
}, { unsafeCleanup: true }));

test('after a clean stop the disk and its map can be copied (cp --sparse=always) or moved together', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'disk.raw');
  await useDisk(image, disk, 'SIGTERM');
  const copyDir = join(dir, 'copy');
  await mkdir(copyDir);
  await execa('cp', ['--sparse=always', disk, `${disk}.map`, copyDir]);
  const copied = join(copyDir, 'disk.raw');
  const log = await expectImage(t, copied, image.repoDir, written(image, 3, 0x77), join(dir, 'out1.raw'));
  t.regex(log, /moved or copied with its map/);
  // Moved (same file, another name): no rebinding needed.
  const moved = join(dir, 'moved.raw');
  await rename(disk, moved);
  await rename(`${disk}.map`, `${moved}.map`);
  const movedLog = await expectImage(t, moved, image.repoDir, written(image, 3, 0x77), join(dir, 'out2.raw'));
  t.notRegex(movedLog, /moved or copied/);
}, { unsafeCleanup: true }));

test('after a SIGKILL the disk reopens in place, but a copy of it is refused (its map cannot vouch for it)', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'disk.raw');
  await useDisk(image, disk, 'SIGKILL');
  const copyDir = join(dir, 'copy');
  await mkdir(copyDir);
  await execa('cp', ['--sparse=always', disk, `${disk}.map`, copyDir]);
  await expectRefused(t, image, join(copyDir, 'disk.raw'), /another file[^\n]*not stopped cleanly/);
  await expectImage(t, disk, image.repoDir, written(image, 3, 0x77), join(dir, 'out.raw'));
}, { unsafeCleanup: true }));

test('a map that records no disk (made before bindings) is refused', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'disk.raw');
  await execa('truncate', ['-s', String(BLOCKS * BS), disk]);
  const { manifest } = image;
  const map = await BlockMap.create(`${disk}.map`, {
    image: 'demo@1', manifestDigest: await manifestDigestOf(image), size: manifest.size, blockSize: BS,
    blockCount: BLOCKS, targets: ['origin'], diskCreatedSparse: true,
  }, async () => {});
  map.markPresent(0, BLOCKS);
  await map.close();
  await expectRefused(t, image, disk, /older lazyboot that did not record its disk/);
  t.is((await stat(disk)).size, BLOCKS * BS);
}, { unsafeCleanup: true }));

/** The manifest digest the device checks, from a map it made itself. */
async function manifestDigestOf(image: TestImage): Promise<string> {
  const scratch = join(image.repoDir, '..', 'scratch.raw');
  await execa('node', [BIN, 'disk', 'fill', '--disk', scratch, '--image', 'demo', '--from', image.repoDir]);
  const map = await BlockMap.open(`${scratch}.map`, async () => {});
  const digest = map.header.manifestDigest;
  await map.close();
  return digest;
}
