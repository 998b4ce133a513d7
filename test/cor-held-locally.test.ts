// What the pivot's qcow2 maps to the local disk (CorDevice.heldLocally): present blocks, and the
// image's zero blocks that are still holes on a disk lazyboot created sparse. Guest writes into
// those after the pivot then go straight to the raw disk instead of allocating qcow2 clusters (with
// a copy-on-write read from the COR device). Checked on a real device and a real qcow2 metadata
// file read back with `qemu-img map`.
import test from 'ava';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { openCorDevice } from '../lib/cor/device.js';
import { prepareMetadata } from '../lib/pivot/native-metadata.js';
import { makeImage, qemuIo } from './cor-fixtures.js';

const BS = 65536;
const BLOCKS = 16;

/** Blocks `qemu-img map` reports as data in the metadata file (its own clusters, no backing). */
async function mappedBlocks(metadataPath: string): Promise<number[]> {
  const { stdout } = await execa('qemu-img', ['map', '--output=json', '-f', 'qcow2', metadataPath]);
  const blocks: number[] = [];
  for (const entry of JSON.parse(stdout) as Array<{ start: number; length: number; data: boolean; depth: number }>) {
    if (!entry.data || entry.depth !== 0) continue;
    for (let at = entry.start; at < entry.start + entry.length; at += BS) blocks.push(at / BS);
  }
  return blocks;
}

test('a disk created sparse: present blocks and untouched zero blocks are held locally, absent data blocks are not; the metadata maps exactly those', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const zero = (block: number) => image.content.subarray(block * BS, (block + 1) * BS).every((byte) => byte === 0);
  const zeroBlocks = [...Array(BLOCKS).keys()].filter(zero);
  t.true(zeroBlocks.length >= 2 && zeroBlocks.length < BLOCKS, `zero blocks ${zeroBlocks}`);
  const disk = join(dir, 'disk.raw');
  const device = await openCorDevice({ image: image.ref, disk, from: [image.repoDir] });
  try {
    for (let block = 0; block < BLOCKS; block++) t.is(device.heldLocally(block), zero(block), `block ${block} before any read`);
    // The guest reads block 0 (fetched: present) and writes into zero block 1 (present, modified).
    const dataBlock = [...Array(BLOCKS).keys()].find((block) => !zero(block))!;
    const zeroBlock = zeroBlocks[0]!;
    await qemuIo(device.uri, [`read ${dataBlock * BS} ${BS}`, `write -P 0x5a ${zeroBlock * BS + 4096} 4096`]);
    await device.settledStats();
    t.true(device.heldLocally(dataBlock), 'a fetched block');
    t.true(device.heldLocally(zeroBlock), 'a zero block the guest wrote');
    const expected = [...Array(BLOCKS).keys()].filter((block) => zero(block) || block === dataBlock);
    const metadataPath = join(dir, 'disk.native.qcow2');
    const prepared = await prepareMetadata({ disk, path: metadataPath, size: image.manifest.size, blockSize: BS, isLocal: device.heldLocally });
    t.is(prepared.presentBlocks, expected.length);
    t.deepEqual(await mappedBlocks(metadataPath), expected);
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));

test('a disk lazyboot did not create (its holes are not known to be zeros): only present blocks are held locally', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: BLOCKS * BS });
  const disk = join(dir, 'disk.raw');
  // A disk file that was there before: its content where nothing was fetched is whatever it holds.
  await writeFile(disk, Buffer.alloc(BLOCKS * BS, 0xee));
  const device = await openCorDevice({ image: image.ref, disk, from: [image.repoDir] });
  try {
    for (let block = 0; block < BLOCKS; block++) t.false(device.heldLocally(block), `block ${block}`);
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));
