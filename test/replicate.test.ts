// The background replicator with real parts: qemu-io writes through the disk's real copy-on-read
// export while `replicate()` / `lazyboot replicate` uploads to a real `repo serve --write-socket`
// (or a directory); afterwards `lazyboot snapshot` only commits, and the new version, exported,
// equals the disk (cmp).
import test from 'ava';
import { withDir } from 'tmp-promise';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeImage, qemuIo, type TestImage } from './cor-fixtures.js';
import { serveDisk } from './helpers/disk-serve.js';
import { startServing, type ServedProcess } from './helpers/served-process.js';
import { lazyboot, oneLine } from './helpers/repo-cli.js';
import { replicate, type ReplicationPass } from '../lib/snapshot/replicate.js';
import { ReplicateNoMap, ReplicateOptionInvalid } from '../lib/snapshot/errors.js';

const BS = 65536;

/** Creates DISK (and its map) through a real `disk serve`, with qemu-io writes. */
async function writeThroughCor(dir: string, image: TestImage, disk: string, commands: string[]): Promise<void> {
  const served = await serveDisk([image.ref, '--disk', disk, '--from', image.repoDir, '--socket', join(dir, `cor-${Date.now()}.sock`)]);
  if (!served.serving) throw new Error(`disk serve failed: ${served.stderr}`);
  try {
    await qemuIo(served.uri, commands);
  } finally {
    await served.stop();
  }
}

/** Writes blocks [block, block+count) through `uri` (and into `expected`), block i with byte `pattern + i`. */
async function writeBlocks(uri: string, expected: Buffer, block: number, count: number, pattern: number): Promise<void> {
  await qemuIo(uri, Array.from({ length: count }, (_, i) => `write -P ${(pattern + i) & 0xff} ${(block + i) * BS} ${BS}`));
  for (let i = 0; i < count; i++) expected.fill((pattern + i) & 0xff, (block + i) * BS, (block + i + 1) * BS);
}

async function snapshotCli(disk: string, to: string, as: string) {
  const result = await lazyboot(['snapshot', '--disk', disk, '--to', to, '--as', as, '--json']);
  if (result.exitCode !== 0) throw new Error(`snapshot failed: ${result.stderr}`);
  return JSON.parse(result.stdout);
}

async function modified(disk: string): Promise<Record<string, number>> {
  return JSON.parse((await lazyboot(['disk', 'status', '--disk', disk, '--json'])).stdout).modifiedBlocks;
}

async function assertVersionEquals(t: any, dir: string, repoDir: string, ref: string, expected: Buffer): Promise<void> {
  const expectedPath = join(dir, `expected-${ref}.raw`);
  await writeFile(expectedPath, expected);
  const exported = join(dir, `export-${ref}-${Date.now()}.raw`);
  const result = await lazyboot(['image', 'export', ref, exported, '--repo', repoDir]);
  t.is(result.exitCode, 0, result.stderr);
  await execa('cmp', [exported, expectedPath]);
  t.pass(`${ref} in ${repoDir} equals the disk`);
}

/** Resolves with the first pass of `target` that `accept` takes, within `ms`. */
function passWhere(passes: ReplicationPass[], listeners: Array<() => void>, accept: (pass: ReplicationPass) => boolean, ms = 60_000): Promise<ReplicationPass> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no such pass within ${ms / 1000} s; passes: ${JSON.stringify(passes.slice(-4))}`)), ms);
    const check = (): void => {
      const found = passes.find(accept);
      if (!found) return;
      clearTimeout(timer);
      resolve(found);
    };
    listeners.push(check);
    check();
  });
}

test('replicate() uploads the written blocks while the disk is served; a snapshot afterwards sends no block data and equals the disk', (t) => withDir(async ({ path: dir }) => {
  t.timeout(240_000);
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const disk = join(dir, 'disk.raw');
  await writeThroughCor(dir, image, disk, [`write -P 0x11 ${1 * BS} ${BS}`]);
  const expected = Buffer.from(image.content);
  expected.fill(0x11, BS, 2 * BS);
  const writeSocket = join(dir, 'w.sock');
  const to = `http+unix:///?socket=${writeSocket}`;
  const server = await startServing(['repo', 'serve', '--repo', image.repoDir, '--socket', join(dir, 'r.sock'), '--write-socket', writeSocket]);
  const passes: ReplicationPass[] = [];
  const listeners: Array<() => void> = [];
  const controller = new AbortController();
  try {
    const replication = await replicate({
      disk, to: [to], from: [image.repoDir], intervalMs: 200, signal: controller.signal, socketPath: join(dir, 'cor.sock'),
      onPass: (pass) => { passes.push(pass); for (const listener of listeners) listener(); },
    });
    t.deepEqual(replication.targets, [{ label: 'origin', uri: to }]);
    // The block written before replication started, then two more through its export.
    await passWhere(passes, listeners, (pass) => pass.sentBlocks === 1 && pass.pendingBlocks === 0);
    await writeBlocks(replication.uri, expected, 5, 2, 0x22); // 0x22, 0x23
    await writeBlocks(replication.uri, expected, 30, 1, 0x11); // the content of block 1: nothing to send
    passes.length = 0; // only passes that ended after the writes landed (see below)
    const caughtUp = await passWhere(passes, listeners, (pass) => pass.dirtyBlocks === 4 && pass.pendingBlocks === 0);
    t.is(caughtUp.error, undefined);
    // Writes during replication, to blocks already uploaded and new ones, one after the other.
    for (let round = 0; round < 12; round++) await writeBlocks(replication.uri, expected, (round * 7) % 20, 1 + (round % 3), 0x30 + 3 * round);
    controller.abort();
    const totals = await replication.done;
    t.is(totals.length, 1);
    t.true(totals[0]!.sentBlocks >= 3, JSON.stringify(totals));
    t.true(totals[0]!.dedupedBlocks >= 1, 'block 30 repeats block 1: only its digest was offered');
    t.true(totals[0]!.wireBytes > totals[0]!.blockBytesSent);
    // Stopped while writes may not all be uploaded: the snapshot ships what is left, loses nothing.
    const dirty = (await modified(disk)).origin!;
    const first = await snapshotCli(disk, to, 'demo');
    t.like(first, { ref: 'demo@2', dirtyBlocks: dirty });
    t.is(first.sentBlocks, totals[0]!.pendingBlocks, 'the snapshot sent exactly the blocks the replicator had not uploaded');
    await assertVersionEquals(t, dir, image.repoDir, 'demo@2', expected);

    // Write, replicate until caught up, stop: the snapshot then only commits.
    const again = await replicate({
      disk, to: [to], from: [image.repoDir], intervalMs: 200, socketPath: join(dir, 'cor2.sock'),
      onPass: (pass) => { passes.push(pass); for (const listener of listeners) listener(); },
    });
    await writeBlocks(again.uri, expected, 40, 8, 0x90);
    await writeBlocks(again.uri, expected, 60, 1, 0xa0);
    // Only passes that ended after the writes: one that ended while block 60's write was under way
    // saw its W-intent (9 marked) but not yet its data, so nothing pending (failed once in CI).
    passes.length = 0;
    await passWhere(passes, listeners, (pass) => pass.dirtyBlocks === 9 && pass.pendingBlocks === 0);
    const stopped = await again.stop();
    t.is(stopped[0]!.blockBytesSent, 9 * BS);
    const second = await snapshotCli(disk, to, 'demo');
    t.like(second, { ref: 'demo@3', parent: 'demo@2', dirtyBlocks: 9, sentBlocks: 0, blockBytesSent: 0, dedupedBlocks: 9 });
    t.true(second.wireBytesSent < 8 * 1024 + 64 * 32, `the commit is digests only: ${second.wireBytesSent} bytes sent`);
    await assertVersionEquals(t, dir, image.repoDir, 'demo@3', expected);
  } finally {
    controller.abort();
    await server.stop();
  }
}, { unsafeCleanup: true }));

test('replicate() refuses bad settings with typed one-line errors before anything opens', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  await writeThroughCor(dir, image, disk, [`write -P 0x11 0 ${BS}`]);
  await t.throwsAsync(replicate({ disk, to: [] }), { instanceOf: ReplicateOptionInvalid, message: /no target/ });
  await t.throwsAsync(replicate({ disk, to: [image.repoDir, `${image.repoDir}/.`] }), { instanceOf: ReplicateOptionInvalid, message: /given twice/ });
  await t.throwsAsync(replicate({ disk, to: [image.repoDir], intervalMs: 0 }), { instanceOf: ReplicateOptionInvalid, message: /too short/ });
  await t.throwsAsync(replicate({ disk, to: [image.repoDir], rate: -5 }), { instanceOf: ReplicateOptionInvalid, message: /not a byte rate/ });
  await t.throwsAsync(replicate({ disk: join(dir, 'none.raw'), to: [image.repoDir] }), { instanceOf: ReplicateNoMap });
}, { unsafeCleanup: true }));

/** `lazyboot replicate …` as a child process; its pass lines are read from stderr. */
async function replicateCli(args: string[]): Promise<ServedProcess> {
  return startServing(['replicate', ...args]);
}

function passCount(stderr: string, label: string): { ok: number; failed: number; caughtUp: number } {
  const lines = stderr.split('\n').filter((line) => line.includes(`replicate ${label} `));
  return {
    ok: lines.filter((line) => !/failed/.test(line)).length,
    failed: lines.filter((line) => /failed/.test(line)).length,
    caughtUp: lines.filter((line) => / 0 not yet uploaded/.test(line)).length,
  };
}

async function until(predicate: () => boolean, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('lazyboot replicate to two targets: each keeps its own marks, and one that goes away catches up when it is back', (t) => withDir(async ({ path: dir }) => {
  t.timeout(240_000);
  const image = await makeImage(dir, 'demo', { size: 32 * BS });
  const repoB = join(dir, 'repoB');
  await cp(image.repoDir, repoB, { recursive: true }); // B holds demo@1 too
  const disk = join(dir, 'disk.raw');
  await writeThroughCor(dir, image, disk, [`write -P 0x41 ${2 * BS} ${BS}`]);
  const expected = Buffer.from(image.content);
  expected.fill(0x41, 2 * BS, 3 * BS);
  const writeSocketB = join(dir, 'wb.sock');
  const toB = `http+unix:///?socket=${writeSocketB}`;
  const serveB = () => startServing(['repo', 'serve', '--repo', repoB, '--socket', join(dir, 'rb.sock'), '--write-socket', writeSocketB]);
  let serverB = await serveB();
  const replicating = await replicateCli(['--disk', disk, '--to', image.repoDir, '--to', toB, '--interval', '300ms', '--from', image.repoDir, '--socket', join(dir, 'cor.sock')]);
  try {
    t.true(await replicating.waitForLog(/new target target-1 for http\+unix/), replicating.stderr());
    await until(() => passCount(replicating.stderr(), 'origin').caughtUp > 0 && passCount(replicating.stderr(), 'target-1').caughtUp > 0, 'both targets caught up');
    // B goes away; writes go on; A keeps up, B's passes fail and keep their blocks.
    await serverB.stop();
    const okA = passCount(replicating.stderr(), 'origin').caughtUp;
    await writeBlocks(replicating.uri, expected, 10, 3, 0x42);
    await until(() => passCount(replicating.stderr(), 'target-1').failed > 0, 'a failed pass to B');
    await until(() => passCount(replicating.stderr(), 'origin').caughtUp > okA, 'A caught up again');
    serverB = await serveB();
    const okB = passCount(replicating.stderr(), 'target-1').caughtUp;
    await until(() => passCount(replicating.stderr(), 'target-1').caughtUp > okB, 'B caught up after its return');
    t.is(await replicating.stop(), 0, replicating.stderr());
    t.deepEqual(await modified(disk), { origin: 4, 'target-1': 4 }, 'replication clears no mark');
    const toA = await snapshotCli(disk, image.repoDir, 'demo');
    t.like(toA, { ref: 'demo@2', target: 'origin', dirtyBlocks: 4, sentBlocks: 0, blockBytesSent: 0 });
    t.deepEqual(await modified(disk), { origin: 0, 'target-1': 4 }, 'a snapshot to A clears A\'s marks only');
    const toBResult = await snapshotCli(disk, toB, 'demo');
    t.like(toBResult, { ref: 'demo@2', target: 'target-1', dirtyBlocks: 4, sentBlocks: 0, blockBytesSent: 0 });
    await assertVersionEquals(t, dir, image.repoDir, 'demo@2', expected);
    await assertVersionEquals(t, dir, repoB, 'demo@2', expected);
  } finally {
    await replicating.stop();
    await serverB.stop();
  }
}, { unsafeCleanup: true }));

test('lazyboot replicate honours --rate', (t) => withDir(async ({ path: dir }) => {
  t.timeout(120_000);
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const disk = join(dir, 'disk.raw');
  // 32 blocks (2 MiB) of new content before replication starts.
  const commands = Array.from({ length: 32 }, (_, i) => `write -P ${0x80 + i} ${i * BS} ${BS}`);
  await writeThroughCor(dir, image, disk, commands);
  const started = Date.now();
  const replicating = await replicateCli(['--disk', disk, '--to', image.repoDir, '--interval', '1s', '--rate', '512K', '--from', image.repoDir, '--socket', join(dir, 'cor.sock')]);
  try {
    await until(() => passCount(replicating.stderr(), 'origin').caughtUp > 0, 'the first pass', 90_000);
  } finally {
    t.is(await replicating.stop(), 0, replicating.stderr());
  }
  const seconds = Number(/pass 1: 32 blocks checked, 32 sent \(2.0 MiB\).*\(([\d.]+) s\)/.exec(replicating.stderr())?.[1]);
  // 2 MiB at 512 KiB/s, the first batch (128 KiB) free: at least 3.75 s (a lower bound, whatever the load).
  t.true(seconds >= 3.7, `the first pass took ${seconds} s: ${replicating.stderr()}`);
  t.true(Date.now() - started >= 3700);
}, { unsafeCleanup: true }));

test('lazyboot replicate: bad input gets one line and a non-zero exit, the disk and its map unchanged', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const disk = join(dir, 'disk.raw');
  await writeThroughCor(dir, image, disk, [`write -P 0x11 0 ${BS}`]);
  const digestOf = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');
  const before = [await digestOf(disk), await digestOf(`${disk}.map`)];
  const cases: Array<[string[], RegExp]> = [
    [['--to', join(dir, 'no-such-repo')], /no-such-repo/],
    [['--to', 'ftp://example.org/repo'], /cannot write to "ftp:\/\/example.org\/repo"/],
    [['--to', `http+unix:///?socket=${join(dir, 'nobody.sock')}`], /cannot write to the repository at .*nobody\.sock \(ENOENT\)/],
    [['--to', image.repoDir, '--interval', 'soon'], /invalid duration "soon"/],
    [['--to', image.repoDir, '--interval', '0'], /replication interval "0" is too short/],
    [['--to', image.repoDir, '--rate', 'fast'], /invalid replication rate "fast"/],
    [['--to', image.repoDir, '--rate=-1M'], /invalid replication rate "-1M"/],
    [['--to', image.repoDir, '--to', image.repoDir], /given twice/],
  ];
  for (const [args, message] of cases) {
    const result = await lazyboot(['replicate', '--disk', disk, '--from', image.repoDir, '--socket', join(dir, 'cor.sock'), ...args]);
    t.is(result.exitCode, 1, `${args.join(' ')}: ${result.stderr}`);
    t.true(oneLine(result.stderr), `${args.join(' ')}: ${result.stderr}`);
    t.regex(result.stderr, message);
  }
  const noMap = await lazyboot(['replicate', '--disk', join(dir, 'other.raw'), '--to', image.repoDir]);
  t.is(noMap.exitCode, 1);
  t.regex(noMap.stderr, /other\.raw has no map/);
  t.deepEqual([await digestOf(disk), await digestOf(`${disk}.map`)], before);
}, { unsafeCleanup: true }));
