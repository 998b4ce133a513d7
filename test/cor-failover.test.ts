// Failover across two real `lazyboot repo serve` processes: one killed mid-read, a corrupt block
// in one repository, and both dead (EIO, no hang, no zeros, present blocks still served).
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { access, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { openCorDevice, mapPathOf, type FetchErrorEvent } from '../lib/cor/device.js';
import { BlockMap } from '../lib/map/block-map.js';
import { DigestMismatch, FetchTimeout } from '../lib/fetch/errors.js';
import { describeFetchError } from '../lib/fetch/failover.js';
import { UnknownImage } from '../lib/repo/errors.js';
import { makeImage, mixedContent, nbdcopyTo, startRepoServer, corruptStoredBlock, qemuImgDd, qemuIo } from './cor-fixtures.js';

const BS = 65536;

/** The same image content imported into two separate repositories (both as name@1). */
async function twoRepositories(dir: string, blocks: number) {
  const content = mixedContent(blocks * BS, BS);
  const a = await makeImage(dir, 'demo', { size: content.length, content, repoDir: join(dir, 'repo-a') });
  const b = await makeImage(dir, 'demo', { size: content.length, content, repoDir: join(dir, 'repo-b') });
  return { a, b, content };
}

test('one repository killed during a full read: the read completes and is identical', (t) => withDir(async ({ path: dir }) => {
  const { a, b } = await twoRepositories(dir, 512); // 32 MiB
  const serverA = await startRepoServer(a.repoDir, join(dir, 'a.sock'));
  const serverB = await startRepoServer(b.repoDir, join(dir, 'b.sock'));
  const events: FetchErrorEvent[] = [];
  try {
    const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [serverA.uri, serverB.uri] });
    device.on('fetch-error', (event: FetchErrorEvent) => events.push(event));
    try {
      const copy = nbdcopyTo(device.uri, join(dir, 'copy.raw'));
      while (device.stats().fetchedBlocks < 20) await sleep(2);
      await serverA.kill();
      const fetchedAtKill = device.stats().fetchedBlocks;
      await copy;
      t.true(fetchedAtKill < 300, `the kill came after ${fetchedAtKill} of ~380 data blocks`);
      t.is((await device.settledStats()).presentBlocks, 512);
      t.is(device.stats().failedFetches, 0);
    } finally {
      await device.close();
    }
    await execa('cmp', [join(dir, 'copy.raw'), a.rawPath]);
    await execa('cmp', [join(dir, 'disk.raw'), a.rawPath]);
    t.true(events.some((e) => e.uri === serverA.uri && !e.final), 'repository A failed over');
    t.false(events.some((e) => e.final));
  } finally {
    await serverA.kill();
    await serverB.kill();
  }
}, { unsafeCleanup: true }));

test('a corrupt block in one repository is detected, served from the other, never stored from the bad one', (t) => withDir(async ({ path: dir }) => {
  const { a, b, content } = await twoRepositories(dir, 32);
  const bad = 6; // a random-content block in mixedContent's pattern
  await corruptStoredBlock(a.repoDir, content.subarray(bad * BS, (bad + 1) * BS));
  const serverA = await startRepoServer(a.repoDir, join(dir, 'a.sock'), ['--no-verify']); // the device's own check is under test
  const serverB = await startRepoServer(b.repoDir, join(dir, 'b.sock'));
  try {
    // An image no server has: UnknownImage, also over NBD (the manifest export is absent).
    await t.throwsAsync(openCorDevice({ image: 'nope', disk: join(dir, 'nope.raw'), from: [serverA.uri, serverB.uri] }), { instanceOf: UnknownImage });
    // Only the corrupt repository: the read fails with EIO and the block stays absent.
    {
      const events: FetchErrorEvent[] = [];
      const device = await openCorDevice({ image: 'demo', disk: join(dir, 'only-a.raw'), from: [serverA.uri] });
      device.on('fetch-error', (event: FetchErrorEvent) => events.push(event));
      try {
        const result = await execa('qemu-io', ['-f', 'raw', '-c', `read ${bad * BS} ${BS}`, device.uri], { reject: false });
        t.regex(`${result.stdout}${result.stderr}`, /Input\/output error/);
        t.is((await device.settledStats()).presentBlocks, 0);
        const mismatch = events.find((e) => e.uri === serverA.uri && e.error instanceof DigestMismatch);
        t.truthy(mismatch, events.map((e) => e.error.message).join('\n'));
        t.true(mismatch!.firstBlock <= bad && bad < mismatch!.firstBlock + mismatch!.blockCount, `blocks ${mismatch!.firstBlock}+${mismatch!.blockCount}`);
        t.regex(mismatch!.error.message, /SHA-256/);
      } finally {
        await device.close();
      }
      const map = await BlockMap.open(mapPathOf(join(dir, 'only-a.raw')), async () => {});
      t.false(map.isPresent(bad));
      await map.close();
    }
    // Both: every byte right, the mismatch reported against A.
    const events: FetchErrorEvent[] = [];
    const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [serverA.uri, serverB.uri] });
    device.on('fetch-error', (event: FetchErrorEvent) => events.push(event));
    try {
      await nbdcopyTo(device.uri, join(dir, 'copy.raw'));
    } finally {
      await device.close();
    }
    await execa('cmp', [join(dir, 'copy.raw'), a.rawPath]);
    await execa('cmp', [join(dir, 'disk.raw'), a.rawPath]);
    t.true(events.some((e) => e.uri === serverA.uri && e.error instanceof DigestMismatch), events.map((e) => e.error.message).join('\n'));
  } finally {
    await serverA.kill();
    await serverB.kill();
  }
}, { unsafeCleanup: true }));

test('all repositories down: EIO for absent blocks (no hang, no zeros), present blocks still served', (t) => withDir(async ({ path: dir }) => {
  const { a, b } = await twoRepositories(dir, 256); // 16 MiB
  const serverA = await startRepoServer(a.repoDir, join(dir, 'a.sock'));
  const serverB = await startRepoServer(b.repoDir, join(dir, 'b.sock'));
  const events: FetchErrorEvent[] = [];
  // Fetch-ahead off: exactly the blocks read become present.
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [serverA.uri, serverB.uri], fetchAheadBytes: 0 });
  device.on('fetch-error', (event: FetchErrorEvent) => events.push(event));
  try {
    // Blocks 0..3, then block 250, which only the repositories could serve.
    await qemuIo(device.uri, [`read 0 ${4 * BS}`]);
    await qemuImgDd(device.uri, join(dir, 'first.raw'), BS, 0, 4);
    await serverA.kill();
    await serverB.kill();
    const started = Date.now();
    const result = await execa('qemu-io', ['-f', 'raw', '-c', `read ${250 * BS} ${BS}`, device.uri], { reject: false });
    t.regex(`${result.stdout}${result.stderr}`, /Input\/output error/);
    t.true(Date.now() - started < 10_000, 'the error comes quickly');
    t.is((await device.settledStats()).presentBlocks, 4);
    t.true(device.stats().failedFetches >= 1);
    // Present blocks still read, with the image's data.
    await qemuImgDd(device.uri, join(dir, 'again.raw'), BS, 0, 4);
    await execa('cmp', [join(dir, 'first.raw'), join(dir, 'again.raw')]);
    await execa('cmp', ['-n', String(4 * BS), join(dir, 'again.raw'), a.rawPath]);
    // One final failure, for block 250 alone; its message names the repositories tried.
    const finals = events.filter((e) => e.final);
    t.is(finals.length, 1, events.map((e) => e.error.message).join('\n'));
    t.is(finals[0]!.firstBlock, 250);
    t.is(finals[0]!.blockCount, 1);
    t.false(finals[0]!.speculative);
    t.true(finals[0]!.error.message.includes(serverA.uri), finals[0]!.error.message);
  } finally {
    await device.close();
    await serverA.kill();
    await serverB.kill();
  }
}, { unsafeCleanup: true }));

test('a failed fetch-ahead is reported as speculative: only the guest read that failed is a "fetch failed" line', (t) => withDir(async ({ path: dir }) => {
  const { a } = await twoRepositories(dir, 64);
  const server = await startRepoServer(a.repoDir, join(dir, 'a.sock'));
  const events: FetchErrorEvent[] = [];
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [server.uri] });
  device.on('fetch-error', (event: FetchErrorEvent) => events.push(event));
  try {
    await qemuIo(device.uri, [`read 0 ${2 * BS}`]); // blocks 0 (data) and 1 (zero) while the server is up
    await server.kill();
    // Block 2 follows a present block: its miss also starts a fetch-ahead of blocks 3.. (fails too).
    const result = await execa('qemu-io', ['-f', 'raw', '-c', `read ${2 * BS} ${BS}`, device.uri], { reject: false });
    t.regex(`${result.stdout}${result.stderr}`, /Input\/output error/);
    for (let i = 0; i < 50 && !events.some((e) => e.final && e.speculative); i++) await sleep(100);
    const guestFailures = events.filter((e) => e.final && !e.speculative);
    const aheadFailures = events.filter((e) => e.final && e.speculative);
    t.is(guestFailures.length, 1);
    t.is(guestFailures[0]!.firstBlock, 2);
    t.true(aheadFailures.length >= 1 && aheadFailures.every((e) => e.firstBlock >= 3), JSON.stringify(aheadFailures.map((e) => e.firstBlock)));
    // What the device logs for each (describeFetchError): only the guest's is a "fetch failed".
    t.regex(describeFetchError(guestFailures[0]!), /^fetch failed: /);
    t.true(aheadFailures.every((e) => describeFetchError(e).startsWith('fetch ahead failed (no guest read affected): ')));
  } finally {
    await device.close();
    await server.kill();
  }
}, { unsafeCleanup: true }));

/** nbdkit's delay filter in front of a repository server: every read waits `delay` (a stalled repository). */
async function startStalledProxy(repoSocket: string, socket: string, delay: string) {
  const child = execa('nbdkit', ['-f', '-U', socket, '--filter=delay', 'nbd', `socket=${repoSocket}`, 'dynamic-export=true', `rdelay=${delay}`], { reject: false });
  for (let i = 0; i < 200 && !(await access(socket).then(() => true, () => false)); i++) await sleep(25);
  return {
    uri: `nbd+unix:///?socket=${socket}`,
    async kill() {
      child.kill('SIGKILL');
      await child;
    },
  };
}

/** Long enough for a healthy repository on a loaded machine; the stalled one stalls 30 s. */
const TIMEOUT_MS = 1_500;

test('a repository that stops answering: reads time out and fail over (in-process and worker reads), and it is tried again later', (t) => withDir(async ({ path: dir }) => {
  // 16 MiB without zero blocks (a read is not split around holes): stripes of 64 blocks alternate B, stalled.
  const content = randomBytes(256 * BS);
  const a = await makeImage(dir, 'demo', { size: content.length, content, repoDir: join(dir, 'repo-a') });
  const b = await makeImage(dir, 'demo', { size: content.length, content, repoDir: join(dir, 'repo-b') });
  const serverA = await startRepoServer(a.repoDir, join(dir, 'a.sock'));
  const serverB = await startRepoServer(b.repoDir, join(dir, 'b.sock'));
  const stalled = await startStalledProxy(join(dir, 'a.sock'), join(dir, 'stalled.sock'), '30');
  const events: FetchErrorEvent[] = [];
  try {
    // B first: the manifest comes from it, and stripe 0 is B's, stripe 1 the stalled one's.
    const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [serverB.uri, stalled.uri], fetchTimeoutMs: TIMEOUT_MS });
    device.on('fetch-error', (event: FetchErrorEvent) => events.push(event));
    try {
      // One block (an in-process read) in stripe 1.
      const started = Date.now();
      await qemuImgDd(device.uri, join(dir, 'one.raw'), BS, 66, 1);
      t.true(Date.now() - started < TIMEOUT_MS + 5_000);
      const timeouts = () => events.filter((e) => e.uri === stalled.uri && e.error instanceof FetchTimeout && !e.final);
      t.is(timeouts().length, 1, events.map((e) => `${e.uri}: ${e.error.message}`).join('\n'));
      t.regex(timeouts()[0]!.error.message, new RegExp(`did not answer for block 66 within ${TIMEOUT_MS} ms`));
      // Block 200 (stripe 3, the stalled one's) is served whether or not its back-off still runs:
      // which of the two happens depends on how fast this machine is, so the back-off itself
      // (skipped while it runs, tried again after 1 s) is asserted on a fake clock in
      // failover-backoff.test.ts, not here.
      await qemuIo(device.uri, [`read ${200 * BS} ${BS}`]);
      // After the back-off (1 s), 32 blocks in stripe 3 try it again: QEMU sends them as requests
      // of several blocks (worker reads), each timing out and served by B.
      await sleep(1_100);
      await qemuIo(device.uri, [`read ${210 * BS} ${32 * BS}`]);
      const later = timeouts().filter((e) => e.firstBlock >= 210);
      t.true(later.length >= 1, events.map((e) => e.error.message).join('\n'));
      t.true(later.every((e) => e.firstBlock >= 210 && e.firstBlock < 242 && e.blockCount >= 4), JSON.stringify(later.map((e) => [e.firstBlock, e.blockCount])));
      t.false(events.some((e) => e.final));
      t.is(device.stats().failedFetches, 0);
    } finally {
      await device.close();
    }
    // What was read equals the image, on the local disk too.
    t.true((await readFile(join(dir, 'one.raw'))).equals((await readFile(a.rawPath)).subarray(66 * BS, 67 * BS)), 'qemu-img dd got block 66');
    const disk = await readFile(join(dir, 'disk.raw'));
    const image = await readFile(a.rawPath);
    for (const [from, count] of [[66, 1], [200, 1], [210, 32]] as const) {
      t.true(disk.subarray(from * BS, (from + count) * BS).equals(image.subarray(from * BS, (from + count) * BS)), `blocks ${from}+${count}`);
    }
  } finally {
    await stalled.kill();
    await serverA.kill();
    await serverB.kill();
  }
}, { unsafeCleanup: true }));
