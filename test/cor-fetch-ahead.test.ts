// Fetch-ahead into memory: a sequential reader with one request in flight gets few, large fetches,
// yet only the blocks it read become present (the rest stays in memory, never on disk or in the map).
import test from 'ava';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { withDir } from 'tmp-promise';
import { randomBytes } from 'node:crypto';
import { openCorDevice, mapPathOf } from '../lib/cor/device.js';
import { BlockMap } from '../lib/map/block-map.js';
import { makeImage, qemuImgDd } from './cor-fixtures.js';

const BS = 65536;

test('a sequential one-block-at-a-time read is served by a few fetches; only read blocks are present', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 96 * BS });
  const disk = join(dir, 'disk.raw');
  const device = await openCorDevice({ image: 'demo', disk, from: [image.repoDir] });
  try {
    // qemu-img dd reads one 64 KiB block per request, one request at a time.
    await qemuImgDd(device.uri, join(dir, 'out.raw'), BS, 0, 40);
    t.true((await readFile(join(dir, 'out.raw'))).equals(image.content.subarray(0, 40 * BS)));
    const stats = device.stats();
    t.is(stats.presentBlocks, 40);
    t.true(stats.fetchRequests <= 6, `${stats.fetchRequests} upstream requests for 40 sequential one-block reads`);
  } finally {
    await device.close();
  }
  const map = await BlockMap.open(mapPathOf(disk), async () => {});
  t.is(map.counts().present, 40);
  t.is(map.nextAbsent(0), 40);
  await map.close();
}, { unsafeCleanup: true }));

test('a read that straddles two fetched-ahead runs takes both from memory (no extra upstream request)', (t) => withDir(async ({ path: dir }) => {
  // No zero blocks (no holes split the reads); 3-block requests straddle the runs' edges.
  const content = randomBytes(300 * BS);
  const image = await makeImage(dir, 'demo', { size: content.length, content });
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir] });
  try {
    await qemuImgDd(device.uri, join(dir, 'out.raw'), 3 * BS, 0, 100);
    t.true((await readFile(join(dir, 'out.raw'))).equals(content));
    const stats = device.stats();
    t.is(stats.presentBlocks, 300);
    // The first miss, then one fetch per 64 blocks or so fetched ahead: no request for a straddling read.
    t.log(`${stats.fetchRequests} upstream requests`);
    t.true(stats.fetchRequests <= 6, `${stats.fetchRequests} upstream requests (8 when straddling reads go upstream)`);
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));
