// The single-writer rule of the pivot (lib/cor/read-through.ts): once QEMU's native graph (a qcow2
// whose data file is the local disk, backed by the COR device) has the disk, QEMU is its only
// writer. The first test breaks the rule on purpose and shows the damage; the others show the
// read-through mode keeping it, with real qemu-io / qemu-img on the native graph.
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { withDir } from 'tmp-promise';
import { openCorDevice, openDisk } from '../lib/cor/device.js';
import { createQcow2Metadata, markPresentClusters } from '../vmm/qcow2-metadata.js';
import { makeImage } from './cor-fixtures.js';

const BS = 65536;
const BLOCKS = 16;
/** A data block of mixedContent (random bytes), absent on a new disk. */
const GUEST_BLOCK = 2;

async function blockOf(file: string, block: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const data = Buffer.alloc(BS);
    await handle.read(data, 0, BS, block * BS);
    return data;
  } finally {
    await handle.close();
  }
}

/** QEMU (qemu-io) writes a whole cluster through the native graph's qcow2: its data lands in the local disk. */
async function qemuWritesCluster(meta: string, block: number, byte: number): Promise<void> {
  const result = await execa('qemu-io', ['-c', `write -P ${byte} ${block * BS} ${BS}`, '--image-opts', `driver=qcow2,file.filename=${meta}`], { reject: false });
  if (result.exitCode !== 0 || /error|fail/i.test(result.stdout + result.stderr)) throw new Error(`qemu-io write failed: ${result.stdout}${result.stderr}`);
}

async function nativeGraphOver(dir: string, disk: string, name: string, isPresent: (block: number) => boolean): Promise<string> {
  const meta = join(dir, `${name}.qcow2`);
  await createQcow2Metadata({ path: meta, dataFile: disk, size: BLOCKS * BS, clusterSize: BS });
  await markPresentClusters(meta, BLOCKS, isPresent);
  return meta;
}

test('rule broken on purpose: a COR store after the pivot overwrites what the guest wrote through QEMU', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'broken.raw');
  const opened = await openDisk({ image: 'demo', disk, from: [image.repoDir], fetchAheadBytes: 0 });
  try {
    const meta = await nativeGraphOver(dir, disk, 'broken', (b) => opened.backend.map.isPresent(b));
    await qemuWritesCluster(meta, GUEST_BLOCK, 0xab);
    t.true((await blockOf(disk, GUEST_BLOCK)).equals(Buffer.alloc(BS, 0xab)), 'the guest write reached the local disk');
    // Not in read-through: the device still stores what it fetches (as its fill or fetch ahead would).
    await opened.backend.ensurePresent(GUEST_BLOCK, GUEST_BLOCK, 'background');
    const after = await blockOf(disk, GUEST_BLOCK);
    t.true(after.equals(image.content.subarray(GUEST_BLOCK * BS, (GUEST_BLOCK + 1) * BS)), 'the image block now sits where the guest wrote');
    t.false(after.equals(Buffer.alloc(BS, 0xab)), 'the guest data is gone: this is the damage the single-writer rule prevents');
  } finally {
    await opened.close();
  }
}, { unsafeCleanup: true }));

test('read-through keeps the rule: no store, no write, no map change; reads of absent blocks still return the image', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'kept.raw');
  const opened = await openDisk({ image: 'demo', disk, from: [image.repoDir], fetchAheadBytes: 0 });
  try {
    const meta = await nativeGraphOver(dir, disk, 'kept', (b) => opened.backend.map.isPresent(b));
    await opened.backend.enterReadThrough();
    await qemuWritesCluster(meta, GUEST_BLOCK, 0xab);
    await t.throwsAsync(opened.backend.ensurePresent(GUEST_BLOCK, GUEST_BLOCK, 'background'), { message: /read-through .*QEMU is the only writer/ });
    await t.throwsAsync(opened.backend.write(0, Buffer.alloc(BS, 1)), { message: /read-through/ });
    // An absent block read through the device: the image's bytes, and the disk is not touched.
    const read = await opened.backend.read(GUEST_BLOCK * BS, BS);
    t.true(read.equals(image.content.subarray(GUEST_BLOCK * BS, (GUEST_BLOCK + 1) * BS)));
    t.true((await blockOf(disk, GUEST_BLOCK)).equals(Buffer.alloc(BS, 0xab)), 'the guest data stays');
    t.true((await blockOf(disk, 0)).equals(Buffer.alloc(BS)), 'a read of block 0 fetched, did not store');
    await opened.backend.read(0, BS);
    t.true((await blockOf(disk, 0)).equals(Buffer.alloc(BS)));
    t.is(opened.backend.map.counts().present, 0, 'no block became present in the map');
    t.is(opened.backend.map.counts().modified[0], 0);
  } finally {
    await opened.close();
  }
}, { unsafeCleanup: true }));

test('native graph on a read-through COR device (real QEMU block layer): reads equal the image, QEMU\'s copy-on-read stores, the device does not, NBD writes refused', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  // A fresh disk with blocks 0..3 present before the pivot.
  const disk2 = join(dir, 'native2.raw');
  const cor = await openCorDevice({ image: 'demo', disk: disk2, from: [image.repoDir], fetchAheadBytes: 0 });
  try {
    await execa('qemu-img', ['dd', '-f', 'raw', '-O', 'raw', `bs=${BS}`, 'count=4', `if=${cor.uri}`, `of=${join(dir, 'head.raw')}`]);
    t.is((await cor.settledStats()).presentBlocks, 4);
    const presentBefore = cor.stats().presentBlocks;
    const meta = join(dir, 'native2.qcow2');
    await createQcow2Metadata({ path: meta, dataFile: disk2, size: BLOCKS * BS, clusterSize: BS });
    await markPresentClusters(meta, BLOCKS, (b) => b < 4);
    await cor.enterReadThrough();
    const qcow2 = { driver: 'qcow2', file: { driver: 'file', filename: meta }, backing: { driver: 'nbd', server: { type: 'unix', path: cor.socketPath }, export: cor.exportName } };
    // Read-only (qemu-img convert): absent blocks come through the device, and nothing is stored.
    const copy = join(dir, 'copy.raw');
    await execa('qemu-img', ['convert', '-O', 'raw', `json:${JSON.stringify(qcow2)}`, copy]);
    t.true((await readFile(copy)).equals(image.content), 'the native graph reads the image');
    t.true((await blockOf(disk2, 6)).equals(Buffer.alloc(BS)), 'an absent block read through the device was not stored');
    // With QEMU's copy-on-read filter on top (qemu-io opens read-write), QEMU stores what it read.
    const cor2 = { driver: 'copy-on-read', file: qcow2 };
    const read = await execa('qemu-io', ['-c', `read 0 ${BLOCKS * BS}`, `json:${JSON.stringify(cor2)}`], { reject: false });
    t.is(read.exitCode, 0, read.stdout + read.stderr);
    t.true((await readFile(disk2)).equals(image.content), 'QEMU\'s copy-on-read filled the local disk at the blocks\' own offsets');
    t.is(cor.stats().presentBlocks, presentBefore, 'the COR device marked nothing: QEMU stored');
    const write = await execa('qemu-io', ['-f', 'raw', '-c', `write -P 7 0 ${BS}`, cor.uri], { reject: false });
    t.regex(write.stdout + write.stderr, /Operation not permitted|failed/i, 'a write through the COR device is refused');
    t.true((await blockOf(disk2, 0)).equals(image.content.subarray(0, BS)));
  } finally {
    await cor.close();
  }
}, { unsafeCleanup: true }));
