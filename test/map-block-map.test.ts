// Block map: bits survive reopen, torn writes recover conservatively, foreign maps are refused.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { open, rm, stat, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlockMap, type MapHeader } from '../lib/map/block-map.js';
import { Bitset } from '../lib/map/bitset.js';
import { MapCorrupt, MapMismatch } from '../lib/map/errors.js';
import { encodeSlot, slotSize } from '../lib/map/map-format.js';

const noSync = async () => {};
function header(blockCount: number, targets = ['origin']): MapHeader {
  return { image: 'demo@1', manifestDigest: 'ab'.repeat(32), size: blockCount * 65536, blockSize: 65536, blockCount, targets };
}

test('bitset scans find next set / next clear across words and count bits', (t) => {
  const bits = new Bitset(200);
  t.is(bits.nextSet(0), -1);
  t.is(bits.nextClear(0), 0);
  bits.setRange(0, 100);
  t.is(bits.nextClear(0), 100);
  t.is(bits.nextSet(100), -1);
  bits.set(170);
  t.is(bits.nextSet(100), 170);
  t.is(bits.count(), 101);
  bits.setRange(100, 100);
  t.is(bits.nextClear(0), -1);
  t.is(bits.count(), 200);
  t.is(bits.runLength(0), 200);
});

test('bits survive close and reopen; counts and scans match', (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  const map = await BlockMap.create(path, header(1000, ['a', 'b']), noSync);
  map.markPresent(10, 5);
  map.markModified(12, 2);
  map.clearModified(1, 13, 1);
  await map.close();
  const again = await BlockMap.open(path, noSync, { image: 'demo@1', blockSize: 65536, blockCount: 1000 });
  t.deepEqual(again.counts(), { present: 5, modified: [2, 1], total: 1000 });
  t.is(again.nextAbsent(10), 15);
  t.is(again.nextModified(0, 0), 12);
  t.is(again.nextModified(13, 1), -1);
  t.true(again.isModified(13));
  t.false(again.isModified(13, 1));
  await again.close();
}, { unsafeCleanup: true }));

test('a 10 GiB image at 64 KiB blocks costs kilobytes of map', (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  const blocks = (10 * 2 ** 30) / 65536;
  const map = await BlockMap.create(path, header(blocks), noSync);
  await map.close();
  const { size } = await stat(path);
  t.true(size <= 100 * 1024, `map is ${size} bytes`);
}, { unsafeCleanup: true }));

test('a torn write of the newest slot falls back to the previous one (R in doubt = absent)', (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  const map = await BlockMap.create(path, header(100), noSync);
  map.markPresent(0, 10);
  map.markModified(50, 1);
  await map.commit(); // generation 2
  map.markPresent(10, 10);
  await map.commit(); // generation 3 (slot B)
  await map.close();
  // Tear slot B: overwrite part of its bitset as a crash mid-write would.
  const file = await open(path, 'r+');
  await file.write(Buffer.alloc(16, 0xff), 0, 16, slotSize(map.header) + 4096);
  await file.close();
  const recovered = await BlockMap.open(path, noSync);
  t.deepEqual(recovered.counts(), { present: 10, modified: [1], total: 100 });
  t.regex(recovered.recovery, /checksum mismatch/);
  // The next commit goes to the torn slot and the map is whole again.
  recovered.markPresent(90, 1);
  await recovered.close();
  const whole = await BlockMap.open(path, noSync);
  t.deepEqual(whole.counts(), { present: 11, modified: [1], total: 100 });
  t.notRegex(whole.recovery, /refused/);
  await whole.close();
}, { unsafeCleanup: true }));

test('both slots damaged is reported as a corrupt map, not silently reset', async (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  const map = await BlockMap.create(path, header(100), noSync);
  map.markPresent(0, 1);
  await map.close();
  const bytes = await readFile(path);
  bytes.fill(0x55, 100, 200);
  bytes.fill(0x55, bytes.length / 2 + 100, bytes.length / 2 + 200);
  await writeFile(path, bytes);
  const error = await t.throwsAsync(BlockMap.open(path, noSync), { instanceOf: MapCorrupt });
  t.regex(error!.toLine(), /corrupt.*delete/);
}, { unsafeCleanup: true }));

test('a map of another image or block size is refused with one line', async (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  await (await BlockMap.create(path, header(100), noSync)).close();
  const other = await t.throwsAsync(BlockMap.open(path, noSync, { image: 'other@2', blockSize: 65536, blockCount: 100 }), { instanceOf: MapMismatch });
  t.is(other!.toLine().split('\n').length, 1);
  t.regex(other!.message, /belongs to image demo@1, not other@2/);
  await t.throwsAsync(BlockMap.open(path, noSync, { image: 'demo@1', blockSize: 4096, blockCount: 1600 }), { instanceOf: MapMismatch, message: /block size/ });
}, { unsafeCleanup: true }));

test('commit syncs data before writing the map, and concurrent commits share work', async (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  // The map file as each data sync saw it: a map written before its sync would show block 1 there.
  const mapAtSync: Buffer[] = [];
  // (the file does not exist yet while create() syncs)
  const map = await BlockMap.create(path, header(64), async () => { mapAtSync.push(await readFile(path).catch(() => Buffer.alloc(0))); });
  mapAtSync.length = 0;
  map.markPresent(1, 1);
  const commits = [map.commit(), map.commit(), map.commit(), map.commit()];
  await Promise.all(commits);
  // Four commits share work: one sync for the first, at most one more for those that waited.
  t.true(mapAtSync.length >= 1 && mapAtSync.length <= 2, `syncs: ${mapAtSync.length}`);
  await map.close();
  const copy = join(dir, 'at-first-sync.map');
  await writeFile(copy, mapAtSync[0]!);
  const atSync = await BlockMap.open(copy, noSync);
  t.false(atSync.isPresent(1), 'when the data was synced, the map on disk did not yet say block 1 is present');
  await atSync.close();
  const after = await BlockMap.open(path, noSync);
  t.true(after.isPresent(1), 'the commit wrote it after the sync');
  await after.close();
}, { unsafeCleanup: true }));

test('a new map reopens as it was written: its never-written second slot is not reported as damage', (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  await (await BlockMap.create(path, header(100), noSync)).close();
  const again = await BlockMap.open(path, noSync);
  t.false(again.recovered);
  t.is(again.recovery, 'generation 1');
  await again.close();
}, { unsafeCleanup: true }));

test('a disk fingerprint is dropped by the first change of any bit, in the commit of that change', (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  const fingerprint = { blocks: [1], sha256: 'cd'.repeat(32) };
  const changes: Array<[string, (map: BlockMap) => boolean | void]> = [
    ['markPresent', (map) => map.markPresent(7, 1)],
    ['markModified of a block already modified', (map) => map.markModified(3, 1)],
    ['clearModified', (map) => map.clearModified(0, 3, 1)],
  ];
  for (const [name, change] of changes) {
    const map = await BlockMap.create(path, { ...header(100), disk: { identity: 'file ino:1 born:2' } }, noSync);
    map.markPresent(1, 1);
    map.markModified(3, 1);
    map.bindDisk({ identity: 'file ino:1 born:2', fingerprint });
    await map.close();
    const certified = await BlockMap.open(path, noSync);
    t.deepEqual(certified.header.disk, { identity: 'file ino:1 born:2', fingerprint }, name);
    // A W-intent must be committed before its data write: markModified says so even for set bits.
    if (name.startsWith('markModified')) t.true(change(certified) as boolean, name);
    else change(certified);
    await certified.commit();
    const after = await BlockMap.open(path, noSync);
    t.deepEqual(after.header.disk, { identity: 'file ino:1 born:2' }, name);
    await after.close();
    await certified.close();
    await rm(path);
  }
}, { unsafeCleanup: true }));

test('a checksummed slot whose header numbers do not add up is refused, not trusted', (t) => withDir(async ({ path: dir }) => {
  const path = join(dir, 'disk.map');
  const bad = [
    { ...header(100), targets: [] },
    { ...header(100), blockCount: 99 },
    { ...header(100), blockSize: 0 },
  ];
  for (const slotHeader of bad) {
    // encodeSlot checksums whatever it is given: what a crafted or buggy writer could leave.
    const slot = encodeSlot({ header: slotHeader, generation: 1n, present: new Bitset(100), modified: [new Bitset(100)] });
    await writeFile(path, Buffer.concat([slot, slot]));
    await t.throwsAsync(BlockMap.open(path, noSync), { instanceOf: MapCorrupt, message: /bad header/ }, JSON.stringify(slotHeader));
  }
}, { unsafeCleanup: true }));
