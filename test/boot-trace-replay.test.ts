// Boot trace, replay (lib/cor/trace-replay.ts, lib/cor/boot-tracing.ts): a stored trace is fetched
// ahead of the guest in trace order, merged into large upstream requests, within a window of the
// trace ahead of the guest, below the guest's own fetches; replayed blocks are stored like any
// fetched block (no block crosses the link twice); the stats say how much of the replay the guest
// used, and a trace that mostly missed is recorded anew. Real repository (`lazyboot repo serve`
// behind a counting proxy), real reader (qemu-io); the held-upstream test drives the layer
// in-process over a real repository directory, with a gate on the replay's (speculative) reads.
import test from 'ava';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { withDir } from 'tmp-promise';
import { openCorDevice, type CorDevice } from '../lib/cor/device.js';
import { CorBackend } from '../lib/cor/cor-backend.js';
import { LocalDisk } from '../lib/cor/local-disk.js';
import { BlockMap } from '../lib/map/block-map.js';
import { Repository } from '../lib/repo/repository.js';
import { TraceStore } from '../lib/trace/trace-store.js';
import type { BlockBackend } from '../lib/block/backend.js';
import { ReadOnlyBackend } from '../lib/block/read-only.js';
import { makeImage, qemuImgDd, qemuIo, startRepoServer, type TestImage } from './cor-fixtures.js';
import { NbdCountingProxy } from './helpers/nbd-counting-proxy.js';

const BS = 65536;
/** Data blocks (mixedContent: blocks 1, 5, 9, … are zero) read one at a time, in a boot-like jumbled order. */
const BOOT_ORDER = [...range(100, 140), ...range(10, 30), ...range(200, 230), ...range(60, 70)];

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

const readsOf = (blocks: readonly number[]) => blocks.map((b) => `read ${b * BS} ${BS}`);

/** Records one boot reading `blocks` into the store at `traces`. */
async function recordBoot(dir: string, image: TestImage, traces: string, blocks: readonly number[]): Promise<void> {
  const device = await openCorDevice({ image: 'demo', disk: join(dir, `record-${Date.now()}.raw`), from: [image.repoDir], trace: { dir: traces, to: false } });
  try {
    await qemuIo(device.uri, readsOf(blocks));
    await device.trace!.finish();
  } finally {
    await device.close();
  }
}

async function whenReplayIdle(device: CorDevice): Promise<void> {
  for (let last = -1; ; await sleep(100)) {
    const { replayRequests } = device.stats();
    if (replayRequests === last) break;
    last = replayRequests;
  }
  await sleep(200);
}

test('a replayed trace is fetched ahead in few large requests, and the guest then finds its blocks present', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 256 * BS });
  const traces = join(dir, 'traces');
  await recordBoot(dir, image, traces, BOOT_ORDER);
  const server = await startRepoServer(image.repoDir, join(dir, 'repo.sock'));
  const proxy = await NbdCountingProxy.start(join(dir, 'proxy.sock'), join(dir, 'repo.sock'));
  const lines: string[] = [];
  try {
    const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [proxy.uri], fetchAheadBytes: 0, trace: { dir: traces, to: false }, log: (line) => lines.push(line) });
    try {
      t.true(lines.some((line) => /boot trace: replaying \d+ blocks/.test(line)), lines.join('\n'));
      // The window holds the whole trace: the replay fetches it all and stops by itself.
      while (device.trace!.replaying) await sleep(50);
      const before = device.stats();
      await qemuIo(device.uri, readsOf(BOOT_ORDER));
      const after = device.stats();
      // Every data block of the trace came by replay, so the guest's reads fetched nothing more.
      const dataBlocks = BOOT_ORDER.filter((b) => b % 4 !== 1);
      t.is(after.traceBlocks, dataBlocks.length);
      t.is(after.replayFetchedBytes, dataBlocks.length * BS);
      t.is(after.fetchRequests, before.fetchRequests, 'the guest missed nothing');
      t.is(after.replayReadBytes, after.replayFetchedBytes, 'the guest used all of the replay');
      // Four stretches of the disk: a few large requests, not one per block.
      t.true(after.replayRequests <= 8, `${after.replayRequests} replay requests`);
      t.true(proxy.reads.filter((r) => !r.exportName.startsWith('manifest:')).length <= 8);
      t.deepEqual([...proxy.readsPerBlock(BS)].filter(([, n]) => n > 1), [], 'no block crosses the link twice');
      const out = join(dir, 'out.raw');
      await qemuImgDd(device.uri, out, BS, 100, 40);
      t.true((await readFile(out)).equals(image.content.subarray(100 * BS, 140 * BS)), 'replayed blocks read back as the image');
      const outcome = await device.trace!.finish();
      t.is(outcome.action, 'added');
      t.is(outcome.traceReadShare, 1);
    } finally {
      await device.close();
    }
  } finally {
    await proxy.close();
    await server.kill();
  }
  t.is((await new TraceStore(traces).load(await onlyDigest(traces)))?.recordings, 2);
}, { unsafeCleanup: true }));

test('the replay runs at most its window ahead of the guest, and follows the guest through the trace', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 256 * BS });
  const traces = join(dir, 'traces');
  const order = range(0, 200).filter((b) => b % 4 !== 1);
  await recordBoot(dir, image, traces, order);
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir], fetchAheadBytes: 0, trace: { dir: traces, to: false, windowBytes: 16 * BS } });
  try {
    await whenReplayIdle(device);
    t.is(device.stats().replayFetchedBytes, 16 * BS, 'the window, before the guest reads');
    t.true(device.trace!.replaying);
    // The guest reads the trace's first 40 blocks: the window moves with it.
    await qemuIo(device.uri, readsOf(order.slice(0, 40)));
    await whenReplayIdle(device);
    const stats = await device.settledStats();
    t.is(stats.replayFetchedBytes, (40 + 16) * BS);
    t.true(device.trace!.stats().replayReadBytes >= 16 * BS);
    // Reading the trace's last block: the guest has gone past it, the replay stops.
    await qemuIo(device.uri, readsOf([order[order.length - 1]!]));
    t.false(device.trace!.replaying);
    t.true(device.stats().replayFetchedBytes <= stats.replayFetchedBytes + 16 * BS);
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));

test('a trace that mostly misses is recorded anew in place of the old', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 256 * BS });
  const traces = join(dir, 'traces');
  await recordBoot(dir, image, traces, range(0, 60));
  const lines: string[] = [];
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir], trace: { dir: traces, to: false, windowBytes: 8 * BS }, log: (line) => lines.push(line) });
  try {
    await qemuIo(device.uri, readsOf(range(150, 200)));
    const outcome = await device.trace!.finish();
    t.is(outcome.action, 're-recorded');
    t.is(outcome.traceReadShare, 0);
    t.is(device.stats().replayReadBytes, 0);
    t.true(lines.some((line) => /re-recorded .*the guest read only 0% of the old trace/.test(line)), lines.join('\n'));
  } finally {
    await device.close();
  }
  const loaded = await new TraceStore(traces).load(await onlyDigest(traces));
  t.is(loaded?.recordings, 1);
  t.deepEqual(loaded?.trace.entries.map((e) => e.block), range(150, 200).filter((b) => b % 4 !== 1));
}, { unsafeCleanup: true }));

/** An upstream whose speculative reads (the replay's) wait until released. */
class HeldSpeculation extends ReadOnlyBackend {
  readonly size;
  readonly constraints;
  held: Array<{ offset: number; length: number }> = [];
  guestReads = 0;
  private release!: () => void;
  private readonly released = new Promise<void>((resolve) => { this.release = resolve; });
  constructor(private readonly inner: BlockBackend) {
    super();
    this.size = inner.size;
    this.constraints = inner.constraints;
  }
  read(offset: number, length: number): Promise<Buffer> {
    this.guestReads++;
    return this.inner.read(offset, length);
  }
  async readSpeculative(offset: number, length: number): Promise<Buffer> {
    this.held.push({ offset, length });
    await this.released;
    return this.inner.read(offset, length);
  }
  releaseAll(): void {
    this.release();
  }
  async close(): Promise<void> {}
}

test('replay never delays a guest miss: with the replay\'s upstream held, guest reads are still served', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 512 * BS });
  const repo = await Repository.open(image.repoDir, { create: false });
  const upstream = new HeldSpeculation(repo.imageBackend(image.manifest, { verify: true }));
  const diskPath = join(dir, 'disk.raw');
  const local = await LocalDisk.openOrCreate(diskPath, image.manifest.size);
  const map = await BlockMap.create(`${diskPath}.map`, {
    image: image.ref, manifestDigest: '00'.repeat(32), size: image.manifest.size, blockSize: BS, blockCount: image.manifest.blockCount,
    targets: ['origin'], diskCreatedSparse: true, disk: { identity: await local.identity() },
  }, () => local.flush());
  const backend = new CorBackend(image.manifest, local, map, upstream, { fetchAheadBytes: 0 });
  try {
    // A trace scattered over 400 blocks: many replay requests, if they were allowed.
    const traced = range(0, 400).filter((b) => b % 4 !== 1 && b % 7 === 0);
    const replay = backend.startReplay({
      manifestDigest: '00'.repeat(32), imageRef: image.ref, blockSize: BS, blockCount: image.manifest.blockCount, recordedAt: Date.now(),
      entries: traced.map((block, i) => ({ block, ms: i })),
    }, { maxInFlight: 3 });
    await sleep(200);
    t.is(upstream.held.length, 3, 'the replay keeps its bound of requests in flight');
    // Guest misses outside the held runs: served while the replay waits.
    const guestBlocks = [401, 402, 403, 410, 420, 430, 440, 450, 460, 470];
    const reads = Promise.all(guestBlocks.map((b) => backend.read(b * BS, BS)));
    const served = await Promise.race([reads, sleep(30_000).then(() => undefined)]);
    t.truthy(served, 'guest reads finished while the replay was held');
    served!.forEach((data, i) => t.true(data.equals(image.content.subarray(guestBlocks[i]! * BS, (guestBlocks[i]! + 1) * BS))));
    t.is(upstream.held.length, 3, 'the replay sent nothing more meanwhile');
    upstream.releaseAll();
    await replay.done;
    t.is(replay.counters.replayFetchedBytes, traced.length * BS);
    // Stored like any fetched block: present once their store lands, never fetched again.
    const guestFetches = upstream.guestReads;
    for (const b of traced) await backend.ensurePresent(b, b, 'guest');
    for (const b of traced) t.true(map.isPresent(b), `block ${b} stored`);
    t.is(upstream.guestReads, guestFetches, 'no replayed block was fetched again');
    const again = await backend.read(traced[5]! * BS, BS);
    t.true(again.equals(image.content.subarray(traced[5]! * BS, (traced[5]! + 1) * BS)));
    t.is(replay.counters.replayReadBytes, BS);
  } finally {
    await backend.close();
    await repo.close();
  }
}, { unsafeCleanup: true }));

async function onlyDigest(traces: string): Promise<string> {
  const { readdir } = await import('node:fs/promises');
  const [digest] = await readdir(traces);
  return digest!;
}
