// The fetch worker: reads of several blocks from a repository (a real `lazyboot repo serve`, or a
// directory) are fetched and verified in a worker thread; small reads and reads after the worker
// is gone stay in-process.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRepositories, type OpenedRepositories, type OpenRepositoriesOptions } from '../lib/fetch/open-repositories.js';
import { workerReadThreshold } from '../lib/fetch/worker-fetcher.js';
import { FetchWorkerFailed } from '../lib/fetch/errors.js';
import { DigestMismatch } from '../lib/fetch/errors.js';
import type { FetchErrorEvent } from '../lib/fetch/failover.js';
import { releaseShared } from '../lib/fetch/shared-buffers.js';
import { makeImage, startRepoServer, corruptStoredBlock } from './cor-fixtures.js';
import { CLI as BIN } from './helpers/cli-path.js';
import { NbdCountingProxy } from './helpers/nbd-counting-proxy.js';

const BS = 65536;
const WORKER_MIN_READ_BYTES = workerReadThreshold(BS);
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/**
 * A real `lazyboot repo serve` of `repoDir` and the image 'demo' opened through it: `body` gets
 * them, and both are closed afterwards (also when it fails).
 */
async function withServedRepository(dir: string, repoDir: string, options: OpenRepositoriesOptions, body: (repositories: OpenedRepositories, uri: string) => Promise<void>): Promise<void> {
  // --no-verify: a corrupt block must reach the worker, whose own verification is under test.
  const server = await startRepoServer(repoDir, join(dir, 'repo.sock'), ['--no-verify']);
  try {
    const repositories = await openRepositories([server.uri], 'demo', options);
    try {
      await body(repositories, server.uri);
    } finally {
      await repositories.close();
    }
  } finally {
    await server.kill();
  }
}

/** Reads and forgets the buffer (in a function of its own, so no reference outlives it). */
async function dropUnreleased(read: () => Promise<Buffer>): Promise<void> {
  const data = await read();
  if (data.length === 0) throw new Error('empty read');
}

test('large reads come verified from the worker, small ones in-process; both equal the image, and buffers given back are reused', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 16 * BS });
  await withServedRepository(dir, image.repoDir, {}, async (repositories) => {
    const worker = repositories.fetchWorker!;
    t.truthy(worker, 'an NBD repository gets a fetch worker');
    const big = await repositories.upstream.read(0, WORKER_MIN_READ_BYTES);
    t.true(big.equals(image.content.subarray(0, WORKER_MIN_READ_BYTES)));
    t.is(worker.answered, 1);
    releaseShared(big);
    // The same size again, after the give-back: still right (the worker reuses the memory).
    const again = await repositories.upstream.read(WORKER_MIN_READ_BYTES, WORKER_MIN_READ_BYTES);
    t.true(again.equals(image.content.subarray(WORKER_MIN_READ_BYTES, 2 * WORKER_MIN_READ_BYTES)));
    t.true(big.equals(image.content.subarray(WORKER_MIN_READ_BYTES, 2 * WORKER_MIN_READ_BYTES)), 'the given-back memory was reused by the worker');
    const small = await repositories.upstream.read(WORKER_MIN_READ_BYTES, WORKER_MIN_READ_BYTES - BS);
    t.true(small.equals(image.content.subarray(WORKER_MIN_READ_BYTES, 2 * WORKER_MIN_READ_BYTES - BS)));
    t.is(worker.answered, 2, 'a small read does not go to the worker');
    // A buffer dropped without a release goes back to the worker once garbage-collected.
    t.is(worker.givenBack, 1);
    await dropUnreleased(() => repositories.upstream.read(0, WORKER_MIN_READ_BYTES));
    t.is(worker.answered, 3);
    for (let i = 0; i < 50 && worker.givenBack < 2; i++) {
      collectGarbage();
      await sleep(20);
    }
    t.is(worker.givenBack, 2, 'the dropped buffer was given back after garbage collection');
    // Once the worker is closed, large reads are served in-process.
    await worker.close();
    t.false(worker.usable);
    const after = await repositories.upstream.read(0, 2 * WORKER_MIN_READ_BYTES);
    t.true(after.equals(image.content.subarray(0, 2 * WORKER_MIN_READ_BYTES)));
    t.is(worker.answered, 3);
  });
}, { unsafeCleanup: true }));

test('a repository directory is read through the worker too, single blocks in-process', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const repositories = await openRepositories([image.repoDir], 'demo');
  try {
    const data = await repositories.upstream.read(0, 64 * BS);
    t.true(data.equals(image.content));
    t.is(repositories.fetchWorker!.answered, 1);
    const small = await repositories.upstream.read(2 * BS, BS);
    t.true(small.equals(image.content.subarray(2 * BS, 3 * BS)));
    t.is(repositories.fetchWorker!.answered, 1);
  } finally {
    await repositories.close();
  }
}, { unsafeCleanup: true }));

test('a worker that dies mid-read: the read is finished in-process, equal to the image, and no repository is blamed', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 256 * BS });
  const events: string[] = [];
  await withServedRepository(dir, image.repoDir, { onFetchError: (event) => events.push(event.error.message) }, async (repositories) => {
    repositories.prestart();
    const worker = repositories.fetchWorker!;
    const reads = [0, 1, 2, 3].map((i) => repositories.upstream.read(i * 64 * BS, 64 * BS));
    await worker.terminate();
    const data = await Promise.all(reads);
    data.forEach((chunk, i) => t.true(chunk.equals(image.content.subarray(i * 64 * BS, (i + 1) * 64 * BS)), `run ${i}`));
    t.false(worker.usable);
    t.deepEqual(events, []);
    const later = await repositories.upstream.read(0, 8 * BS);
    t.true(later.equals(image.content.subarray(0, 8 * BS)));
  });
}, { unsafeCleanup: true }));

test('a worker that crashes (an exception in the thread) is logged once, and reads go on in-process', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const lines: string[] = [];
  const repositories = await openRepositories([image.repoDir], 'demo', { log: (line) => lines.push(line) });
  try {
    const worker = repositories.fetchWorker!;
    // No member 99: the worker's message handler throws, which ends the thread.
    await t.throwsAsync(worker.read(99, 0, 4 * BS), { instanceOf: FetchWorkerFailed });
    t.false(worker.usable);
    t.is(lines.length, 1, lines.join('\n'));
    t.regex(lines[0]!, /^fetch worker stopped \(.+\): fetching on the main thread from now on$/);
    const data = await repositories.upstream.read(0, 64 * BS);
    t.true(data.equals(image.content));
  } finally {
    await repositories.close();
  }
  t.is(lines.length, 1, 'closing logs nothing more');
}, { unsafeCleanup: true }));

test('a corrupt block in a large read is a DigestMismatch naming the repository and the block', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 32 * BS });
  const bad = 7; // a random-content block in mixedContent's pattern
  await corruptStoredBlock(image.repoDir, image.content.subarray(bad * BS, (bad + 1) * BS));
  const mismatches: DigestMismatch[] = [];
  const onFetchError = (event: FetchErrorEvent) => { if (event.error instanceof DigestMismatch) mismatches.push(event.error); };
  await withServedRepository(dir, image.repoDir, { onFetchError }, async (repositories, uri) => {
    await t.throwsAsync(repositories.upstream.read(0, 32 * BS), { message: new RegExp(`block ${bad} from .* does not match its SHA-256 digest`) });
    t.is(repositories.fetchWorker!.answered, 1, 'the mismatch was found in the worker');
    t.is(mismatches.length, 1);
    t.is(mismatches[0]!.source, uri);
    t.is(mismatches[0]!.block, bad);
    t.is(mismatches[0]!.code, 'EIO');
    // The blocks before it are fine, also through the worker.
    const good = await repositories.upstream.read(8 * BS, 16 * BS);
    t.true(good.equals(image.content.subarray(8 * BS, 24 * BS)));
  });
}, { unsafeCleanup: true }));

test('`disk fill` from an NBD repository completes and exits (the worker keeps no process alive)', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 128 * BS });
  const server = await startRepoServer(image.repoDir, join(dir, 'repo.sock'));
  try {
    const disk = join(dir, 'disk.raw');
    const result = await execa('node', [BIN, 'disk', 'fill', '--disk', disk, '--image', 'demo', '--from', server.uri], { reject: false, timeout: 60_000 });
    t.is(result.exitCode, 0, result.stderr);
    await execa('cmp', [disk, image.rawPath]);
  } finally {
    await server.kill();
  }
}, { unsafeCleanup: true }));

test('prestart opens the block connections (the worker\'s and the in-process one) before the first read, so no read pays for a handshake', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const server = await startRepoServer(image.repoDir, join(dir, 'repo.sock'));
  const proxy = await NbdCountingProxy.start(join(dir, 'proxy.sock'), join(dir, 'repo.sock'));
  try {
    const repositories = await openRepositories([proxy.uri], 'demo');
    try {
      const blockExports = () => proxy.exportsOpened.filter((name) => !name.startsWith('manifest:'));
      t.deepEqual(blockExports(), [], 'opening reads only the manifest');
      repositories.prestart();
      for (let waited = 0; blockExports().length < 2 && waited < 10_000; waited += 20) await sleep(20);
      t.deepEqual(blockExports(), ['demo@1', 'demo@1'], 'one connection for the worker, one in-process');
      t.deepEqual(proxy.reads.filter((read) => !read.exportName.startsWith('manifest:')), [], 'and no block read yet');
      // Both serve reads on those connections: no new handshake.
      const [large, small] = await Promise.all([repositories.upstream.read(0, 16 * BS), repositories.upstream.read(32 * BS, BS)]);
      t.true(large.equals(image.content.subarray(0, 16 * BS)));
      t.true(small.equals(image.content.subarray(32 * BS, 33 * BS)));
      t.is(blockExports().length, 2);
    } finally {
      await repositories.close();
    }
  } finally {
    await proxy.close();
    await server.kill();
  }
}, { unsafeCleanup: true }));
