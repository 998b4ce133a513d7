// "Fetch only what the guest needs", held on a real boot (issue 11): the Debian fixture boots
// lazily from a `lazyboot repo serve` behind a proxy that counts what crosses the link and parses
// every READ. By agent-ready the bytes over the link stay within 1.2× the bytes of the image blocks
// the guest needed (plus the manifest), and across the whole boot no block crosses twice.
// Bytes, not time: the assertions hold on a loaded machine as on an idle one.
import path from 'node:path';
import test from 'ava';
import { ensureFixture } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { importImage, scratchDir, serveRepository } from './boot-support.js';
import { NbdCountingProxy } from './helpers/nbd-counting-proxy.js';

const BLOCK = 65536;
/** The bound; fetch-ahead.ts keeps 1.1× + 2 MiB, so a boot needing ≥ 20 MiB stays under it. */
const BOUND = 1.2;

test.serial('debian boot through a counting proxy: by agent-ready ≤ 1.2× the needed bytes over the link, and no block fetched twice', async (t) => {
  t.timeout(8 * 60_000);
  const debian = await ensureFixture('debian');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, debian.path, 'debian');
  const served = await serveRepository(t, repoDir);
  const proxy = await NbdCountingProxy.start(path.join(scratch, 'link.sock'), served.socketPath);
  t.teardown(() => proxy.close());

  const vm = await launch({ image: 'debian', from: [proxy.uri], agent: true, memoryMiB: 512, timeoutMs: 240_000 });
  let atReady;
  try {
    await vm.ready;
    atReady = { stats: vm.stats(), blockBytes: proxy.blockBytesToClients, allBytes: proxy.bytesToClients };
    const check = await vm.exec('/bin/true');
    t.is(check.exitCode, 0);
  } finally {
    await vm.close();
  }
  const manifestBytes = atReady.allBytes - atReady.blockBytes;
  const needed = atReady.stats.demandedBytes;
  const MiB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  t.log(`by agent-ready: ${MiB(atReady.allBytes)} over the link (${MiB(manifestBytes)} manifest), guest needed ${MiB(needed)}; ` +
    `fetched ahead ${MiB(atReady.stats.aheadFetchedBytes)}, of it read ${MiB(atReady.stats.aheadReadBytes)}; ${atReady.stats.fetchRequests} requests`);
  // A boot that needed almost nothing would make the ratio meaningless (the fixture needs ~60 MiB).
  t.true(needed > 20 * 2 ** 20, `the guest needed ${needed} bytes`);
  t.true(atReady.allBytes <= BOUND * needed + manifestBytes, `${atReady.allBytes} bytes over the link; bound ${BOUND} × ${needed} + ${manifestBytes}`);
  t.true(atReady.stats.fetchedBytes <= BOUND * needed);

  const perBlock = proxy.readsPerBlock(BLOCK);
  const twice = [...perBlock].filter(([, count]) => count > 1).map(([block, count]) => `${block}×${count}`);
  t.deepEqual(twice, [], 'no block crossed the link twice during the boot');
  t.true(perBlock.size * BLOCK >= needed, 'the reads seen on the wire cover what the guest needed');
});
