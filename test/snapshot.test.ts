// `lazyboot snapshot` with real parts: qemu-io writes through a real `disk serve`, the snapshot
// ships to a real `repo serve --write-socket` (or a directory), and the new version is exported
// (`image export`, nbdcopy over `repo serve`) and compared with cmp.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeImage, qemuIo, type TestImage } from './cor-fixtures.js';
import { serveDisk } from './helpers/disk-serve.js';
import { startServing } from './helpers/served-process.js';
import { lazyboot, oneLine } from './helpers/repo-cli.js';
import { BlockMap } from '../lib/map/block-map.js';

const BS = 65536;

/** Writes through a real `disk serve` of `image` on `disk` with qemu-io, then stops it cleanly. */
async function writeThroughCor(dir: string, image: TestImage, disk: string, commands: string[], ref = image.ref): Promise<void> {
  const served = await serveDisk([ref, '--disk', disk, '--from', image.repoDir, '--socket', join(dir, `cor-${Date.now()}.sock`)]);
  if (!served.serving) throw new Error(`disk serve failed: ${served.stderr}`);
  try {
    await qemuIo(served.uri, commands);
  } finally {
    await served.stop();
  }
}

/** `content` with `pattern` written over [offset, offset+length). */
function applyWrite(content: Buffer, offset: number, length: number, pattern: number): Buffer {
  const copy = Buffer.from(content);
  copy.fill(pattern, offset, offset + length);
  return copy;
}

async function packBytes(repoDir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(join(repoDir, 'packs'))) if (name.endsWith('.pack')) total += (await stat(join(repoDir, 'packs', name))).size;
  return total;
}

async function status(disk: string): Promise<{ modifiedBlocks: Record<string, number>; presentBlocks: number }> {
  const result = await lazyboot(['disk', 'status', '--disk', disk, '--json']);
  return JSON.parse(result.stdout);
}

async function snapshotCli(disk: string, to: string, as: string, extra: string[] = []) {
  return lazyboot(['snapshot', '--disk', disk, '--to', to, '--as', as, '--json', ...extra]);
}

/** Exports REF with `image export` and with nbdcopy over a real `repo serve`, and cmp's both with `expected`. */
async function assertVersionEquals(t: any, dir: string, repoDir: string, ref: string, expected: Buffer): Promise<void> {
  const expectedPath = join(dir, `expected-${ref}.raw`);
  await writeFile(expectedPath, expected);
  const exported = join(dir, `export-${ref}.raw`);
  const result = await lazyboot(['image', 'export', ref, exported, '--repo', repoDir]);
  t.is(result.exitCode, 0, result.stderr);
  await execa('cmp', [exported, expectedPath]);
  const server = await startServing(['repo', 'serve', '--repo', repoDir, '--socket', join(dir, `cmp-${Date.now()}.sock`)]);
  try {
    const copied = join(dir, `nbd-${ref}.raw`);
    await execa('nbdcopy', [server.uri.replace('/?socket', `/${ref}?socket`), copied]);
    await execa('cmp', [copied, expectedPath]);
  } finally {
    await server.stop();
  }
  t.pass(`${ref} equals the expected bytes (image export and nbdcopy)`);
}

test('snapshot over repo serve ships only the dirty blocks the repository lacks; the new version equals the written disk, the parent is unchanged', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const disk = join(dir, 'disk.raw');
  // Block 3 and 40 get the same new content (sent once); block 20 a partial write (the block is
  // fetched, then changed); block 50 zeros (nothing stored); block 10 new content.
  await writeThroughCor(dir, image, disk, [
    `write -P 0xaa ${3 * BS} ${BS}`, `write -P 0xbb ${10 * BS} ${BS}`, `write -P 0xcc ${20 * BS + 100} 512`,
    `write -P 0xaa ${40 * BS} ${BS}`, `write -P 0x00 ${50 * BS} ${BS}`,
  ]);
  let expected = image.content;
  for (const [offset, length, pattern] of [[3 * BS, BS, 0xaa], [10 * BS, BS, 0xbb], [20 * BS + 100, 512, 0xcc], [40 * BS, BS, 0xaa], [50 * BS, BS, 0]] as const) {
    expected = applyWrite(expected, offset, length, pattern);
  }
  t.deepEqual((await status(disk)).modifiedBlocks, { origin: 5 });

  const writeSocket = join(dir, 'w.sock');
  const to = `http+unix:///?socket=${writeSocket}`;
  const server = await startServing(['repo', 'serve', '--repo', image.repoDir, '--socket', join(dir, 'r.sock'), '--write-socket', writeSocket]);
  const before = await packBytes(image.repoDir);
  let summary: any;
  let again: any;
  try {
    const result = await snapshotCli(disk, to, 'demo');
    t.is(result.exitCode, 0, result.stderr);
    summary = JSON.parse(result.stdout);
    // Nothing changed since: the next snapshot sends no block.
    again = JSON.parse((await snapshotCli(disk, to, 'demo')).stdout);
  } finally {
    await server.stop();
  }
  t.like(summary, { ref: 'demo@2', parent: 'demo@1', target: 'origin', dirtyBlocks: 5, sentBlocks: 3, dedupedBlocks: 1, zeroBlocks: 1, absentBlocks: 0, blockBytesSent: 3 * BS, existing: false });
  const wire = summary.wireBytesSent + summary.wireBytesReceived;
  t.is(wire, summary.blockBytesSent + summary.overheadBytes, 'every wire byte is block data or reported overhead');
  t.true(wire <= summary.dirtyBlocks * BS + summary.overheadBytes);
  // Overhead: the offered digests, the commit's digest table (32 bytes per image block), HTTP framing.
  t.true(summary.overheadBytes <= 16 * 1024 + 2 * 32 * 64, `overhead ${summary.overheadBytes}`);
  t.like(again, { ref: 'demo@3', parent: 'demo@2', dirtyBlocks: 0, sentBlocks: 0, blockBytesSent: 0 });
  t.is(await packBytes(image.repoDir) - before, 3 * BS, 'the repository grew by the three new unique blocks');
  t.deepEqual((await status(disk)).modifiedBlocks, { origin: 0 }, 'the shipped marks are cleared');

  await assertVersionEquals(t, dir, image.repoDir, 'demo@2', expected);
  await assertVersionEquals(t, dir, image.repoDir, 'demo@3', expected);
  await assertVersionEquals(t, dir, image.repoDir, 'demo@1', image.content);

  // Content the repository has already sends no block data (another disk, snapshot to the directory).
  const other = join(dir, 'other.raw');
  await writeThroughCor(dir, image, other, [`write -P 0xbb ${7 * BS} ${BS}`], 'demo@1');
  const grownBefore = await packBytes(image.repoDir);
  const known = JSON.parse((await snapshotCli(other, image.repoDir, 'second')).stdout);
  t.like(known, { ref: 'second@1', parent: 'demo@1', dirtyBlocks: 1, sentBlocks: 0, dedupedBlocks: 1, blockBytesSent: 0 });
  t.is(await packBytes(image.repoDir), grownBefore, 'known content stores nothing');
  await assertVersionEquals(t, dir, image.repoDir, 'second@1', applyWrite(image.content, 7 * BS, BS, 0xbb));
}, { unsafeCleanup: true }));

test('two targets keep independent marks: a snapshot to A clears only A\'s; B ships everything B lacks', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 32 * BS });
  const repoB = join(dir, 'repoB');
  await makeImage(dir, 'unrelated', { size: 4 * BS, repoDir: repoB });
  const disk = join(dir, 'disk.raw');
  await writeThroughCor(dir, image, disk, [`write -P 0x51 ${2 * BS} ${BS}`, `write -P 0x52 ${9 * BS} ${BS}`]);
  let expected = applyWrite(applyWrite(image.content, 2 * BS, BS, 0x51), 9 * BS, BS, 0x52);

  const toA = JSON.parse((await snapshotCli(disk, image.repoDir, 'demo')).stdout);
  t.like(toA, { ref: 'demo@2', target: 'origin', dirtyBlocks: 2, sentBlocks: 2 });

  // B does not hold demo@1 and most of the disk was never fetched: refused, nothing changed.
  const refused = await snapshotCli(disk, repoB, 'demo');
  t.is(refused.exitCode, 1);
  t.true(oneLine(refused.stderr.split('\n').filter((line) => !/lazyboot: (new )?target/.test(line)).join('\n')), refused.stderr);
  t.regex(refused.stderr, /does not hold demo@1 \(the image this disk came from\) and 30 of its blocks are not local: fill the disk first/);
  t.is((await lazyboot(['disk', 'fill', '--disk', disk, '--from', image.repoDir])).exitCode, 0);

  const toB = JSON.parse((await snapshotCli(disk, repoB, 'copy')).stdout);
  const dataBlocks = new Set<string>();
  for (let i = 0; i < 32; i++) {
    const block = expected.subarray(i * BS, (i + 1) * BS);
    if (!block.equals(Buffer.alloc(BS))) dataBlocks.add(block.toString('latin1'));
  }
  t.like(toB, { ref: 'copy@1', target: 'target-1', dirtyBlocks: 32, sentBlocks: dataBlocks.size });
  t.false('parent' in toB);
  await assertVersionEquals(t, dir, repoB, 'copy@1', expected);
  t.deepEqual((await status(disk)).modifiedBlocks, { origin: 0, 'target-1': 0 });

  // A new write is marked for both; each target ships it once, independently.
  await writeThroughCor(dir, image, disk, [`write -P 0x53 ${30 * BS} ${BS}`]);
  expected = applyWrite(expected, 30 * BS, BS, 0x53);
  t.deepEqual((await status(disk)).modifiedBlocks, { origin: 1, 'target-1': 1 });
  t.like(JSON.parse((await snapshotCli(disk, image.repoDir, 'demo')).stdout), { ref: 'demo@3', parent: 'demo@2', dirtyBlocks: 1, sentBlocks: 1 });
  t.deepEqual((await status(disk)).modifiedBlocks, { origin: 0, 'target-1': 1 }, 'A\'s snapshot left B\'s mark');
  t.like(JSON.parse((await snapshotCli(disk, repoB, 'copy')).stdout), { ref: 'copy@2', parent: 'copy@1', dirtyBlocks: 1, sentBlocks: 1 });
  await assertVersionEquals(t, dir, image.repoDir, 'demo@3', expected);
  await assertVersionEquals(t, dir, repoB, 'copy@2', expected);
}, { unsafeCleanup: true }));

test('bad input is one line, exit 1, and changes neither disk, map nor repository', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  await writeThroughCor(dir, image, disk, [`write -P 0x61 0 ${BS}`]);
  const cases: Array<[string[], RegExp]> = [
    [['--disk', join(dir, 'nothing.raw'), '--to', image.repoDir, '--as', 'x'], /nothing\.raw has no map/],
    [['--disk', disk, '--to', 'ftp://host/repo', '--as', 'x'], /cannot write to "ftp:\/\/host\/repo": use a repository directory, http\+unix/],
    [['--disk', disk, '--to', join(dir, 'no-repo'), '--as', 'x'], /no-repo is not a lazyboot repository/],
    [['--disk', disk, '--to', image.repoDir, '--as', '../evil'], /invalid image name "\.\.\/evil"/],
    [['--disk', disk, '--to', `http+unix:///?socket=${join(dir, 'nobody.sock')}`, '--as', 'x'], /cannot write to the repository at http\+unix:[^ ]* \(ENOENT\)/],
  ];
  for (const [args, message] of cases) {
    const result = await lazyboot(['snapshot', ...args]);
    t.is(result.exitCode, 1, args.join(' '));
    t.true(oneLine(result.stderr), result.stderr);
    t.regex(result.stderr, message);
  }
  // The disk in use by a `disk serve`: refused, naming the process.
  const served = await serveDisk([image.ref, '--disk', disk, '--from', image.repoDir, '--socket', join(dir, 'busy.sock')]);
  if (!served.serving) throw new Error(served.stderr);
  try {
    const busy = await lazyboot(['snapshot', '--disk', disk, '--to', image.repoDir, '--as', 'x']);
    t.is(busy.exitCode, 1);
    t.regex(busy.stderr, /disk\.raw is in use by process \d+: stop that process first/);
  } finally {
    await served.stop();
  }
  t.deepEqual((await status(disk)).modifiedBlocks, { origin: 1 }, 'the mark is still there');
  const listing = await lazyboot(['image', 'ls', '--repo', image.repoDir]);
  t.notRegex(listing.stdout, /^x@/m);
}, { unsafeCleanup: true }));

test('marks in doubt: a damaged in-flight set is refused in one line; --full hashes every local block and sends only what the repository lacks', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 16 * BS });
  const disk = join(dir, 'disk.raw');
  await writeThroughCor(dir, image, disk, [`write -P 0x71 ${4 * BS} ${BS}`, `write -P 0x72 ${9 * BS} ${BS}`]);
  t.is((await lazyboot(['disk', 'fill', '--disk', disk, '--from', image.repoDir])).exitCode, 0);
  const expected = applyWrite(applyWrite(image.content, 4 * BS, BS, 0x71), 9 * BS, BS, 0x72);
  // A crash after the marks moved to the in-flight set, which then got damaged: the map has none left.
  const map = await BlockMap.open(`${disk}.map`, async () => undefined);
  map.clearModifiedWhere(0, map.modified[0]!.copy());
  await map.commit();
  await map.close();
  await writeFile(`${disk}.map.sending`, 'LZBSEND1 damaged');
  t.deepEqual((await status(disk)).modifiedBlocks, { origin: 0 });

  const refused = await snapshotCli(disk, image.repoDir, 'demo');
  t.is(refused.exitCode, 1);
  t.true(oneLine(refused.stderr), refused.stderr);
  t.regex(refused.stderr, /map\.sending \(blocks of an interrupted snapshot\) is not an in-flight set: .*snapshot with --full/);

  const before = await packBytes(image.repoDir);
  const full = await snapshotCli(disk, image.repoDir, 'demo', ['--full']);
  t.is(full.exitCode, 0, full.stderr);
  const summary = JSON.parse(full.stdout);
  t.like(summary, { ref: 'demo@2', parent: 'demo@1', dirtyBlocks: 16, sentBlocks: 2, blockBytesSent: 2 * BS });
  t.is(await packBytes(image.repoDir) - before, 2 * BS, 'only the two blocks the repository lacked were stored');
  await assertVersionEquals(t, dir, image.repoDir, 'demo@2', expected);
  await t.throwsAsync(stat(`${disk}.map.sending`), { code: 'ENOENT' }, 'the damaged set is gone');
}, { unsafeCleanup: true }));

test('disk status counts a block both in an interrupted snapshot\'s in-flight set and marked again once; the next snapshot sends that union', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 16 * BS });
  const disk = join(dir, 'disk.raw');
  await writeThroughCor(dir, image, disk, [`write -P 0x61 ${4 * BS} ${BS}`, `write -P 0x62 ${5 * BS} ${BS}`, `write -P 0x63 ${9 * BS} ${BS}`]);
  const expected = applyWrite(applyWrite(applyWrite(image.content, 4 * BS, BS, 0x61), 5 * BS, BS, 0x62), 9 * BS, BS, 0x63);
  // As a killed snapshot leaves it: blocks 4 and 5 moved to the in-flight set, then block 5 written again (marked anew).
  const { Bitset } = await import('../lib/map/bitset.js');
  const { writeSendingSet } = await import('../lib/snapshot/sending-set.js');
  const map = await BlockMap.open(`${disk}.map`, async () => undefined);
  const shipping = new Bitset(map.blockCount);
  shipping.setRange(4, 2);
  await writeSendingSet(`${disk}.map.sending`, { target: 'origin', session: 'killed-session', name: 'demo', blocks: shipping });
  map.clearModified(0, 4, 1);
  await map.commit();
  await map.close();

  const held = JSON.parse((await lazyboot(['disk', 'status', '--disk', disk, '--json'])).stdout);
  t.deepEqual(held.modifiedBlocks, { origin: 2 }, 'blocks 5 and 9 are marked in the map');
  t.deepEqual(held.inFlight, { target: 'origin', blocks: 2, pendingBlocks: 3 }, 'blocks 4, 5 and 9: block 5 counted once');
  const text = (await lazyboot(['disk', 'status', '--disk', disk])).stdout;
  t.regex(text, /in flight: 2 blocks of an interrupted snapshot to origin \(marked again at the next snapshot, 3 to send in all\)/);

  const shipped = await snapshotCli(disk, image.repoDir, 'demo');
  t.is(shipped.exitCode, 0, shipped.stderr);
  t.like(JSON.parse(shipped.stdout), { ref: 'demo@2', sentBlocks: 3 });
  t.deepEqual((await status(disk)).modifiedBlocks, { origin: 0 });
  await assertVersionEquals(t, dir, image.repoDir, 'demo@2', expected);
}, { unsafeCleanup: true }));
