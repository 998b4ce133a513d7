// A cold read is answered from the fetched (verified) memory before the blocks are written to the
// local disk. These tests slow down or fail that local write to show that it stays invisible to
// the guest: a write right after such a read is never overwritten by the late store, and a store
// that fails leaves the blocks absent (fetched again), never present with wrong data.
import test from 'ava';
import { join } from 'node:path';
import { open } from 'node:fs/promises';
import { withDir } from 'tmp-promise';
import { openDisk, mapPathOf } from '../lib/cor/device.js';
import type { LocalDisk } from '../lib/cor/local-disk.js';
import { BlockMap } from '../lib/map/block-map.js';
import { makeImage } from './cor-fixtures.js';

const BS = 65536;

/** Wraps the device's stores of fetched data (writeInBackground: the only way the COR layer stores them). */
function interceptStores(local: LocalDisk, wrap: (store: LocalDisk['writeInBackground'], offset: number, data: Buffer) => Promise<void>): void {
  const store = local.writeInBackground.bind(local);
  local.writeInBackground = (offset, data) => wrap(store, offset, data);
}

async function readDiskBlock(disk: string, block: number): Promise<Buffer> {
  const file = await open(disk, 'r');
  try {
    const buffer = Buffer.alloc(BS);
    await file.read(buffer, 0, BS, block * BS);
    return buffer;
  } finally {
    await file.close();
  }
}

test('a guest write right after a cold read of the same block is not overwritten by the late store of the fetched data', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'img', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  const opened = await openDisk({ image: 'img', disk, from: [image.repoDir] });
  const guestData = Buffer.alloc(BS, 0x5a);
  try {
    const { backend } = opened;
    // The store of the fetched block is held until the guest's write was issued; the guest's own
    // write is immediate.
    let releaseStore!: () => void;
    const storeHeld = new Promise<void>((resolve) => (releaseStore = resolve));
    let storeLanded: Promise<void> | undefined;
    interceptStores(opened.local, (write, offset, data) => {
      if (storeLanded) return write(offset, data);
      storeLanded = storeHeld.then(() => write(offset, data));
      return storeLanded;
    });
    const read = await backend.read(0, BS);
    t.true(read.equals(image.content.subarray(0, BS)), 'the cold read returns the image');
    t.false(backend.map.isPresent(0), 'answered before the block was stored');
    const written = backend.write(0, guestData);
    releaseStore();
    await written;
    // The store has landed by now: had the guest write not waited for it, it would have been
    // overwritten with the image's block here.
    await storeLanded;
    await backend.whenStoresSettled();
    t.true((await backend.read(0, BS)).equals(guestData));
    t.true(backend.map.isPresent(0));
    t.true(backend.map.isModified(0));
  } finally {
    await opened.close();
  }
  t.true((await readDiskBlock(disk, 0)).equals(guestData), 'the local disk holds the guest write, not the fetched block');
  const map = await BlockMap.open(mapPathOf(disk), async () => {});
  t.true(map.isPresent(0));
  t.true(map.isModified(0));
  await map.close();
}, { unsafeCleanup: true }));

test('a failed local store leaves the blocks absent and logged; the next read fetches them again', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'img', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  const lines: string[] = [];
  const opened = await openDisk({ image: 'img', disk, from: [image.repoDir], log: (line) => lines.push(line) });
  try {
    const { backend } = opened;
    let failures = 1;
    interceptStores(opened.local, async (write, offset, data) => {
      if (failures-- > 0) throw new Error('EIO: injected local write failure');
      await write(offset, data);
    });
    // The guest still gets verified image data: the fetch succeeded, only keeping it failed.
    t.true((await backend.read(0, BS)).equals(image.content.subarray(0, BS)));
    await backend.whenStoresSettled();
    t.false(backend.map.isPresent(0), 'a block whose store failed is not present');
    t.is(lines.filter((line) => line.includes('could not store fetched blocks locally')).length, 1, lines.join('\n'));
    const fetchesBefore = backend.counters.fetchRequests;
    t.true((await backend.read(0, BS)).equals(image.content.subarray(0, BS)));
    t.true(backend.counters.fetchRequests > fetchesBefore, 'fetched again');
    await backend.whenStoresSettled();
    t.true(backend.map.isPresent(0));
  } finally {
    await opened.close();
  }
  t.true((await readDiskBlock(disk, 0)).equals(image.content.subarray(0, BS)));
}, { unsafeCleanup: true }));

test('when one segment of a fetch fails to store, its other segments still hold their blocks until their writes end', (t) => withDir(async ({ path: dir }) => {
  // Blocks 0 and 2..4 are data, block 1 is zero: one fetch, stored as two segments.
  const image = await makeImage(dir, 'img', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  const opened = await openDisk({ image: 'img', disk, from: [image.repoDir], log: () => {} });
  const guestData = Buffer.alloc(BS, 0xa5);
  try {
    const { backend } = opened;
    // The stores run after the read is answered: the first (block 0) fails, the other is held
    // until the guest's write to block 2 was issued.
    let failBlock0 = true;
    let releaseStore!: () => void;
    const storeHeld = new Promise<void>((resolve) => (releaseStore = resolve));
    interceptStores(opened.local, async (write, offset, data) => {
      if (data.equals(guestData)) return write(offset, data);
      if (offset === 0 && failBlock0) {
        failBlock0 = false;
        throw new Error('EIO: injected local write failure');
      }
      await storeHeld;
      await write(offset, data);
    });
    t.true((await backend.read(0, 5 * BS)).equals(image.content.subarray(0, 5 * BS)));
    const written = backend.write(2 * BS, guestData);
    releaseStore();
    await written;
    // Every store has ended by now: one that did not wait would have overwritten block 2.
    await backend.whenStoresSettled();
    t.true((await backend.read(2 * BS, BS)).equals(guestData), 'the slow store of block 2 did not land after the guest write');
    t.false(backend.map.isPresent(0), 'the block whose store failed stays absent');
    t.true(backend.map.isPresent(3));
  } finally {
    await opened.close();
  }
  t.true((await readDiskBlock(disk, 2)).equals(guestData));
}, { unsafeCleanup: true }));
