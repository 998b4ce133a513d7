// Copy-on-read device through real NBD clients (qemu-img, qemu-io, nbdcopy): reads equal the
// image, only read blocks become present, fill completes the disk, writes are kept and marked.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCorDevice, mapPathOf } from '../lib/cor/device.js';
import { BlockMap } from '../lib/map/block-map.js';
import { MapMismatch } from '../lib/map/errors.js';
import { UnknownImage } from '../lib/repo/errors.js';
import { RepositoryUnreachable } from '../lib/fetch/errors.js';
import { NbdConnectError } from '../lib/nbd/errors.js';
import { DiskInUse } from '../lib/cor/errors.js';
import { makeImage, nbdcopyTo, qemuImgDd, qemuIo } from './cor-fixtures.js';

const BS = 65536;
const noSync = async () => {};

/** The image's bytes with one block overwritten by a guest's pattern byte. */
function withBlockFilled(content: Buffer, block: number, byte: number): Buffer {
  return Buffer.from(content).fill(byte, block * BS, (block + 1) * BS);
}

test('with fetch-ahead off, reading ranges fetches exactly those blocks, and the data equals the image', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 64 * BS + 12345 });
  const disk = join(dir, 'disk.raw');
  const device = await openCorDevice({ image: 'demo', disk, from: [image.repoDir], fetchAheadBytes: 0 });
  try {
    t.is((await device.settledStats()).presentBlocks, 0);
    // Blocks 3..5 and 40 through qemu-img dd (a real client).
    await qemuImgDd(device.uri, join(dir, 'a.raw'), BS, 3, 3);
    await qemuImgDd(device.uri, join(dir, 'b.raw'), BS, 40, 1);
    t.true((await readFile(join(dir, 'a.raw'))).equals(image.content.subarray(3 * BS, 6 * BS)));
    t.true((await readFile(join(dir, 'b.raw'))).equals(image.content.subarray(40 * BS, 41 * BS)));
    // The short last block, through qemu-io with a pattern-free read.
    await qemuIo(device.uri, [`read ${64 * BS} 12345`]);
    const stats = await device.settledStats();
    t.is(stats.presentBlocks, 5);
    t.is(stats.totalBlocks, 65);
    t.is(stats.modifiedBlocks, 0);
  } finally {
    await device.close();
  }
  const map = await BlockMap.open(mapPathOf(disk), noSync);
  const present = [];
  for (let b = map.present.nextSet(0); b >= 0; b = map.present.nextSet(b + 1)) present.push(b);
  t.deepEqual(present, [3, 4, 5, 40, 64]);
  await map.close();
}, { unsafeCleanup: true }));

test('a read across a zero block fetches its data blocks in one upstream request', (t) => withDir(async ({ path: dir }) => {
  // mixedContent: block 8 data, 9 zero, 10 and 11 data (the reply has a hole between them); the
  // image ends there, so nothing is fetched ahead.
  const image = await makeImage(dir, 'demo', { size: 12 * BS });
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir] });
  try {
    await qemuImgDd(device.uri, join(dir, 'read.raw'), 4 * BS, 2, 1);
    t.true((await readFile(join(dir, 'read.raw'))).equals(image.content.subarray(8 * BS, 12 * BS)));
    t.is(device.stats().fetchRequests, 1);
    t.is(device.stats().fetchedBlocks, 3);
    t.is((await device.settledStats()).presentBlocks, 4);
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));

test('a full read equals the image, and after it the local raw file is the image (cmp)', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 100 * BS });
  const disk = join(dir, 'disk.raw');
  const device = await openCorDevice({ image: 'demo@1', disk, from: [image.repoDir] });
  try {
    await nbdcopyTo(device.uri, join(dir, 'copy.raw'));
    t.is((await device.settledStats()).presentBlocks, 100);
    // Zero blocks are never fetched: fetchedBlocks counts data blocks only.
    const zeroBlocks = image.manifest.digests.length / 32 - device.stats().fetchedBlocks;
    t.true(zeroBlocks >= 20, `zero blocks ${zeroBlocks}`);
  } finally {
    await device.close();
  }
  await execa('cmp', [join(dir, 'copy.raw'), image.rawPath]);
  await execa('cmp', [disk, image.rawPath]);
}, { unsafeCleanup: true }));

test('fill makes the disk byte-identical to the image and the map all present', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 200 * BS + 4096 });
  const disk = join(dir, 'disk.raw');
  const device = await openCorDevice({ image: 'demo', disk, from: [image.repoDir], fill: true });
  try {
    await device.filled;
    const stats = await device.settledStats();
    t.is(stats.presentBlocks, stats.totalBlocks);
    t.is(stats.readRequests, 0);
  } finally {
    await device.close();
  }
  await execa('cmp', [disk, image.rawPath]);
  const map = await BlockMap.open(mapPathOf(disk), noSync);
  t.is(map.counts().present, 201);
  await map.close();
}, { unsafeCleanup: true }));

test('writes read back, W is set exactly for written blocks, and fill keeps them', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const disk = join(dir, 'disk.raw');
  {
    const device = await openCorDevice({ image: 'demo', disk, from: [image.repoDir] });
    try {
      // A whole absent block (10), a partial write into absent block 20 (needs a fetch first),
      // a write spanning blocks 30..31, write-zeroes on block 50 and a TRIM of block 60.
      await qemuIo(device.uri, [
        `write -P 0xa1 ${10 * BS} ${BS}`,
        `write -P 0xb2 ${20 * BS + 100} 1000`,
        `write -P 0xc3 ${30 * BS + BS / 2} ${BS}`,
        `write -z ${50 * BS} ${BS}`,
        `discard ${60 * BS} ${BS}`,
        'flush',
      ]);
      await qemuIo(device.uri, [
        `read -P 0xa1 ${10 * BS} ${BS}`,
        `read -P 0xb2 ${20 * BS + 100} 1000`,
        `read -P 0xc3 ${30 * BS + BS / 2} ${BS}`,
        `read -P 0 ${50 * BS} ${BS}`,
        `read -P 0 ${60 * BS} ${BS}`,
      ]);
      t.is(device.stats().modifiedBlocks, 6);
    } finally {
      await device.close();
    }
  }
  const map = await BlockMap.open(mapPathOf(disk), noSync);
  const modified = [];
  for (let b = map.nextModified(0); b >= 0; b = map.nextModified(b + 1)) modified.push(b);
  t.deepEqual(modified, [10, 20, 30, 31, 50, 60]);
  await map.close();
  // Reopen with fill: every other block arrives, the written ones stay as written.
  const device = await openCorDevice({ image: 'demo', disk, from: [image.repoDir], fill: true });
  try {
    await device.filled;
    t.is((await device.settledStats()).presentBlocks, 64);
  } finally {
    await device.close();
  }
  const local = await readFile(disk);
  const expected = Buffer.from(image.content);
  expected.fill(0xa1, 10 * BS, 11 * BS);
  expected.fill(0xb2, 20 * BS + 100, 20 * BS + 1100);
  expected.fill(0xc3, 30 * BS + BS / 2, 31 * BS + BS / 2);
  expected.fill(0, 50 * BS, 51 * BS);
  expected.fill(0, 60 * BS, 61 * BS); // a whole-block TRIM reads back as zeros here
  t.true(local.equals(expected));
}, { unsafeCleanup: true }));

test('unknown image, unreachable repositories, a disk in use and a foreign map each give one clear error', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  await makeImage(dir, 'other', { size: 8 * BS, repoDir: image.repoDir });
  const disk = join(dir, 'disk.raw');
  await t.throwsAsync(openCorDevice({ image: 'nope', disk, from: [image.repoDir] }), { instanceOf: UnknownImage });
  const dead = [`nbd+unix:///?socket=${join(dir, 'dead1.sock')}`, 'nbd://127.0.0.1:1'];
  const unreachable = await t.throwsAsync(openCorDevice({ image: 'demo', disk, from: dead }), { instanceOf: RepositoryUnreachable });
  t.regex(unreachable!.message, /dead1\.sock.*127\.0\.0\.1:1/);
  t.notRegex(unreachable!.message, /\n/);
  // Each repository's own error, typed, in the order tried (not flattened into the message only).
  t.deepEqual(unreachable!.causes.map((failure) => failure.uri), dead);
  t.deepEqual(unreachable!.uris, dead);
  for (const { error } of unreachable!.causes) t.true(error instanceof NbdConnectError, `${error.name}: ${error.message}`);
  const device = await openCorDevice({ image: 'demo', disk, from: [image.repoDir] });
  const second = await t.throwsAsync(openCorDevice({ image: 'demo', disk, from: [image.repoDir] }), { instanceOf: DiskInUse });
  t.regex(second!.message, new RegExp(`in use by process ${process.pid}`));
  await device.close();
  const foreign = await t.throwsAsync(openCorDevice({ image: 'other', disk, from: [image.repoDir] }), { instanceOf: MapMismatch });
  t.regex(foreign!.toLine(), /belongs to image demo@1, not other@1/);
}, { unsafeCleanup: true }));

test('absent zero blocks are answered as holes; a zero block the guest wrote reads back inside a larger read', (t) => withDir(async ({ path: dir }) => {
  // mixedContent: blocks 1 and 5 of every 8 are zero blocks in the image.
  const image = await makeImage(dir, 'demo', { size: 32 * BS });
  // Fetch-ahead off: the present count below is what the reads made present.
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir], fetchAheadBytes: 0 });
  try {
    // libnbd's structured read of blocks 0..7: the zero blocks arrive as holes.
    const script = [
      'import json',
      'holes = []',
      'def chunk(buf, offset, status, error):',
      '    if status == nbd.READ_HOLE: holes.append([offset, len(buf)])',
      '    return 0',
      `data = h.pread_structured(${8 * BS}, 0, chunk)`,
      'first = list(holes)',
      'holes.clear()',
      `again = h.pread_structured(${8 * BS}, 0, chunk)  # now present, still known zero`,
      'print(json.dumps({"holes": first, "again": holes, "data": data.hex(), "same": data == again}))',
    ].join('\n');
    const { stdout } = await execa('/usr/bin/python3', ['-m', 'nbd', '-u', device.uri, '-c', script]);
    const result = JSON.parse(stdout) as { holes: Array<[number, number]>; again: Array<[number, number]>; data: string; same: boolean };
    t.deepEqual(result.holes, [[1 * BS, BS], [5 * BS, BS]]);
    t.deepEqual(result.again, [[1 * BS, BS], [5 * BS, BS]]);
    t.true(result.same);
    t.true(Buffer.from(result.data, 'hex').equals(image.content.subarray(0, 8 * BS)));
    t.is((await device.settledStats()).presentBlocks, 8);
    // Block 9 (a zero block, present after a hole answer) is written; then one deep read of the
    // whole disk fetches blocks 8 and 10.. around it and must return the guest's bytes there.
    await qemuIo(device.uri, [`read ${9 * BS} ${BS}`]);
    await qemuIo(device.uri, [`write -P 0x5a ${9 * BS} ${BS}`]);
    const out = join(dir, 'all.raw');
    await nbdcopyTo(device.uri, out);
    t.true((await readFile(out)).equals(withBlockFilled(image.content, 9, 0x5a)));
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));

test('block status reports absent zero blocks as holes (qemu-img map), so a convert skips them and still equals the image', (t) => withDir(async ({ path: dir }) => {
  // mixedContent: blocks 1 and 5 of every 8 are zero blocks in the image.
  const image = await makeImage(dir, 'demo', { size: 16 * BS });
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir] });
  try {
    await qemuIo(device.uri, [`write -P 0x33 ${9 * BS} ${BS}`]); // a zero block the guest wrote
    const { stdout } = await execa('qemu-img', ['map', '--output=json', '-f', 'raw', device.uri]);
    const map = JSON.parse(stdout) as Array<{ start: number; length: number; zero: boolean; data: boolean }>;
    const zeroBlocks = new Set<number>();
    for (const entry of map) if (entry.zero) for (let at = entry.start; at < entry.start + entry.length; at += BS) zeroBlocks.add(at / BS);
    t.deepEqual([...zeroBlocks].sort((a, b) => a - b), [1, 5, 13], 'every absent zero block, not the written one');
    t.is(device.stats().fetchedBlocks, 0, 'asking fetches nothing');
    const out = join(dir, 'copy.raw');
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', device.uri, out]);
    t.true((await readFile(out)).equals(withBlockFilled(image.content, 9, 0x33)));
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));
