// Fetch-ahead pays for itself (lib/cor/fetch-ahead.ts): a sequential reader with one request in
// flight gets few, large fetches; a reader that jumps about gets its speculation cut off; in both,
// every block crosses the link once and the bytes over the link stay within
// (1 + BUDGET_SHARE) × what the guest needed + BUDGET_FLOOR_BYTES + STREAK_CAP_BYTES (the last
// only for a reader that read that much fetched-ahead data in a row). Measured on the wire by a proxy
// in front of a real `lazyboot repo serve`, read by real clients (qemu-img dd, qemu-io).
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { withDir } from 'tmp-promise';
import { randomBytes } from 'node:crypto';
import { openCorDevice, type CorStats } from '../lib/cor/device.js';
import { BUDGET_FLOOR_BYTES, BUDGET_SHARE, STREAK_CAP_BYTES } from '../lib/cor/fetch-ahead.js';
import { makeImage, qemuImgDd, qemuIo, startRepoServer } from './cor-fixtures.js';
import { NbdCountingProxy } from './helpers/nbd-counting-proxy.js';

const BS = 65536;
/** An NBD simple reply's header: the only bytes on the wire besides block data and the handshake. */
const REPLY_HEADER = 16;
/** Handshake bytes of the block connections (greeting, export info): a few hundred each, a few connections. */
const HANDSHAKES = 16 * 1024;

interface Served {
  readonly proxy: NbdCountingProxy;
  readonly close: () => Promise<void>;
}

async function serveThroughProxy(dir: string, repoDir: string): Promise<Served> {
  const server = await startRepoServer(repoDir, join(dir, 'repo.sock'));
  const proxy = await NbdCountingProxy.start(join(dir, 'proxy.sock'), join(dir, 'repo.sock'));
  return { proxy, close: async () => { await proxy.close(); await server.kill(); } };
}

/**
 * Every block crossed the link at most once; bytes within the budget's bound (plus reply headers).
 * `streakCredit`: the most a streak of reads of fetched-ahead data can have earned in this test.
 */
function assertWithinBound(t: ExecutionContext, proxy: NbdCountingProxy, stats: CorStats, streakCredit = STREAK_CAP_BYTES): void {
  const perBlock = proxy.readsPerBlock(BS);
  const twice = [...perBlock].filter(([, count]) => count > 1);
  t.deepEqual(twice, [], 'no block is fetched twice');
  const requested = proxy.requestedBlockBytes;
  // What crossed the link is the blocks asked for, a reply header each, and the handshakes.
  t.true(proxy.blockBytesToClients >= requested && proxy.blockBytesToClients <= requested + REPLY_HEADER * proxy.reads.length + HANDSHAKES);
  const bound = (1 + BUDGET_SHARE) * stats.demandedBytes + BUDGET_FLOOR_BYTES + streakCredit;
  t.log(`${(requested / 2 ** 20).toFixed(2)} MiB of blocks over the link in ${proxy.reads.length} reads; guest needed ${(stats.demandedBytes / 2 ** 20).toFixed(2)} MiB; fetched ahead ${(stats.aheadFetchedBytes / 2 ** 20).toFixed(2)} MiB, of it read ${(stats.aheadReadBytes / 2 ** 20).toFixed(2)} MiB`);
  t.true(requested <= bound, `${requested} bytes of blocks over the link, bound ${bound}`);
  t.is(stats.fetchedBytes, requested, 'the device counts what crossed the link');
}

/**
 * A fresh device over `content` in a repository served behind the proxy; `reader` reads it through
 * a real client. Returns the device's stats once it closed, and the proxy's view of the wire.
 */
async function readThroughProxy(dir: string, content: Buffer, reader: (uri: string) => Promise<void>): Promise<{ stats: CorStats; proxy: NbdCountingProxy }> {
  const image = await makeImage(dir, 'demo', { size: content.length, content });
  const served = await serveThroughProxy(dir, image.repoDir);
  try {
    const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [served.proxy.uri] });
    try {
      await reader(device.uri);
    } finally {
      await device.close();
    }
    // Taken after close: a fetch ahead still in flight when the reader ended has then landed, so
    // the device's count and the wire's agree (before, a loaded machine saw them differ).
    return { stats: await device.settledStats(), proxy: served.proxy };
  } finally {
    await served.close();
  }
}

test('a sequential one-block-at-a-time read gets few, large fetches; each block crosses the link once', (t) => withDir(async ({ path: dir }) => {
  const content = randomBytes(300 * BS);
  // qemu-img dd reads one 64 KiB block per request, one request at a time.
  const { stats, proxy } = await readThroughProxy(dir, content, (uri) => qemuImgDd(uri, join(dir, 'out.raw'), BS, 0, 200));
  t.true((await readFile(join(dir, 'out.raw'))).equals(content.subarray(0, 200 * BS)));
  t.is(stats.demandedBytes, 200 * BS);
  // Without fetch-ahead: 200 requests. The window grows with what was read (2 MiB, then more).
  t.true(stats.fetchRequests <= 20, `${stats.fetchRequests} upstream requests for 200 sequential one-block reads`);
  t.true(stats.aheadReadBytes >= 150 * BS, 'most of the reading was served by fetches ahead');
  assertWithinBound(t, proxy, stats);
}, { unsafeCleanup: true }));

test('a read that straddles fetched-ahead runs needs no request of its own', (t) => withDir(async ({ path: dir }) => {
  const content = randomBytes(300 * BS);
  const { stats, proxy } = await readThroughProxy(dir, content, (uri) => qemuImgDd(uri, join(dir, 'out.raw'), 3 * BS, 0, 100));
  t.true((await readFile(join(dir, 'out.raw'))).equals(content));
  t.is(stats.presentBlocks, 300);
  t.true(stats.fetchRequests <= 20, `${stats.fetchRequests} upstream requests for 100 reads of 3 blocks`);
  assertWithinBound(t, proxy, stats);
}, { unsafeCleanup: true }));

test('a reader that jumps about (two blocks here, two blocks there) gets its fetch-ahead cut off by the budget', (t) => withDir(async ({ path: dir }) => {
  // Each pair looks sequential (the second read follows the first): without a budget every pair
  // would open a full 8 MiB window, ~100 times the bytes the reader needed.
  const blocks = 1200;
  const commands: string[] = [];
  for (let pair = 0; pair < 60; pair++) {
    const block = (pair * 397) % (blocks - 2);
    commands.push(`read ${block * BS} ${BS}`, `read ${(block + 1) * BS} ${BS}`);
  }
  const { stats, proxy } = await readThroughProxy(dir, randomBytes(blocks * BS), async (uri) => { await qemuIo(uri, commands); });
  t.true(stats.demandedBytes <= 120 * BS && stats.demandedBytes >= 100 * BS, `${stats.demandedBytes} bytes needed`);
  // Each pair's second read may touch one block fetched ahead for the first: a streak of one block.
  t.true(stats.aheadFetchedBytes <= BUDGET_FLOOR_BYTES + BUDGET_SHARE * stats.demandedBytes + BS, `${stats.aheadFetchedBytes} bytes fetched ahead`);
  assertWithinBound(t, proxy, stats, BS);
}, { unsafeCleanup: true }));
