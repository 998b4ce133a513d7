// Fetch-ahead into memory: a sequential reader with one request in flight gets few, large fetches,
// yet only the blocks it read become present (the rest stays in memory, never on disk or in the map).
import test from 'ava';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { withDir } from 'tmp-promise';
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
