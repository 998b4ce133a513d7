// Snapshots under failure, with real processes: the repository server SIGKILLed, and separately the
// snapshot process SIGKILLed, at random moments. After each: every visible version is whole, no
// mark is lost (in the map or in the in-flight set), and a retry completes with exactly one new
// version that equals the disk.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeImage, qemuIo, type TestImage } from './cor-fixtures.js';
import { serveDisk } from './helpers/disk-serve.js';
import { startServing } from './helpers/served-process.js';
import { BIN, lazyboot, oneLine } from './helpers/repo-cli.js';

const BS = 65536;
const IMAGE_BLOCKS = 640; // 40 MiB
const DIRTY_BLOCKS = 512; // 32 MiB per round: two batches of 16 MiB and a commit

/** Writes a fresh pattern over the first DIRTY_BLOCKS blocks through a real `disk serve`; returns the expected disk. */
async function dirtyRound(dir: string, image: TestImage, disk: string, expected: Buffer, round: number): Promise<Buffer> {
  const served = await serveDisk([image.ref, '--disk', disk, '--from', image.repoDir, '--socket', join(dir, `cor-${round}.sock`)]);
  if (!served.serving) throw new Error(served.stderr);
  const pattern = 0x20 + round;
  try {
    // Every block different (all are sent): the round's pattern, and a mark at a place of its own.
    const commands = [`write -P ${pattern} 0 ${DIRTY_BLOCKS * BS}`];
    for (let block = 0; block < DIRTY_BLOCKS; block++) commands.push(`write -P ${block % 251} ${block * BS + 512 * Math.floor(block / 251)} 512`);
    await qemuIo(served.uri, commands);
  } finally {
    await served.stop();
  }
  const next = Buffer.from(expected);
  next.fill(pattern, 0, DIRTY_BLOCKS * BS);
  for (let block = 0; block < DIRTY_BLOCKS; block++) {
    const at = block * BS + 512 * Math.floor(block / 251);
    next.fill(block % 251, at, at + 512);
  }
  return next;
}

async function versions(repoDir: string): Promise<string[]> {
  const listing = await lazyboot(['image', 'ls', '--repo', repoDir]);
  return [...listing.stdout.matchAll(/^(demo@\d+)\s/gm)].map((match) => match[1]!);
}

/** Every listed version is whole: each block stored and matching its digest. */
async function assertAllWhole(t: any, repoDir: string): Promise<void> {
  for (const ref of await versions(repoDir)) {
    const info = await lazyboot(['image', 'info', ref, '--verify', '--repo', repoDir]);
    t.is(info.exitCode, 0, `${ref}: ${info.stderr}`);
  }
}

/**
 * Marks held for origin: in the map, united with those of an interrupted snapshot's in-flight set
 * (a block can be in both: counting each set alone would count it twice).
 */
async function marksHeld(disk: string): Promise<number> {
  const status = JSON.parse((await lazyboot(['disk', 'status', '--disk', disk, '--json'])).stdout);
  return status.inFlight ? status.inFlight.pendingBlocks : status.modifiedBlocks.origin;
}

async function assertEquals(dir: string, repoDir: string, ref: string, expected: Buffer): Promise<void> {
  const expectedPath = join(dir, 'expected.raw');
  await writeFile(expectedPath, expected);
  const out = join(dir, 'export.raw');
  const result = await lazyboot(['image', 'export', ref, out, '--repo', repoDir]);
  if (result.exitCode !== 0) throw new Error(result.stderr);
  await execa('cmp', [out, expectedPath]);
}

const randomDelay = (maxMs: number) => new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * maxMs)));

/**
 * Odd rounds: a random moment from the start (often before anything is shipped); even rounds: a
 * random moment after the in-flight set exists (while blocks travel or the commit runs).
 */
async function killMoment(disk: string, round: number, done: Promise<unknown>): Promise<void> {
  if (round % 2 === 1) {
    await randomDelay(2500);
    return;
  }
  const { access } = await import('node:fs/promises');
  let finished = false;
  void done.then(() => (finished = true));
  while (!finished && !(await access(`${disk}.map.sending`).then(() => true, () => false))) await new Promise((resolve) => setTimeout(resolve, 5));
  await randomDelay(800);
}

test('the snapshot process SIGKILLed at random moments: no partial version, no lost mark, the retry adds exactly one version', async (t) => {
  t.timeout(900_000);
  await withDir(async ({ path: dir }) => {
    const image = await makeImage(dir, 'demo', { size: IMAGE_BLOCKS * BS });
    const disk = join(dir, 'disk.raw');
    let expected = image.content;
    for (let round = 1; round <= 4; round++) {
      expected = await dirtyRound(dir, image, disk, expected, round);
      const before = await versions(image.repoDir);
      const child = execa('node', [BIN, 'snapshot', '--disk', disk, '--to', image.repoDir, '--as', 'demo', '--json'], { reject: false });
      await killMoment(disk, round, child);
      child.kill('SIGKILL');
      const killed = await child;
      await assertAllWhole(t, image.repoDir);
      const after = await versions(image.repoDir);
      t.true(after.length === before.length || after.length === before.length + 1, `round ${round}: ${after}`);
      if (after.length === before.length) t.is(await marksHeld(disk), DIRTY_BLOCKS, `round ${round}: every mark is held`);
      const retry = await lazyboot(['snapshot', '--disk', disk, '--to', image.repoDir, '--as', 'demo', '--json']);
      t.is(retry.exitCode, 0, retry.stderr);
      const result = JSON.parse(retry.stdout);
      t.log(`round ${round}: killed run ${killed.exitCode === 0 ? 'had finished' : 'killed'}; retry: ${result.ref}, existing ${result.existing}, ${result.recoveredMarks} marks recovered, ${result.sentBlocks} blocks sent`);
      // A killed run that committed (the kill came after its commit, even if before its exit) left its
      // version; the retry then finds it (existing: the map had not recorded it yet) or, when the map
      // had, is a snapshot of its own. One that did not commit left none: the retry makes it.
      if (result.existing) t.is(result.ref, after.at(-1), `round ${round}: the retry found the killed run's version`);
      const expectedVersions = result.existing ? after : [...after, result.ref];
      t.deepEqual(await versions(image.repoDir), expectedVersions, `round ${round}: one new version`);
      t.is(await marksHeld(disk), 0);
      await assertEquals(dir, image.repoDir, result.ref, expected);
    }
  }, { unsafeCleanup: true });
});

test('the repository server SIGKILLed at random moments: the snapshot fails in one line with every mark kept; after a restart the retry completes', async (t) => {
  t.timeout(900_000);
  await withDir(async ({ path: dir }) => {
    const image = await makeImage(dir, 'demo', { size: IMAGE_BLOCKS * BS });
    const disk = join(dir, 'disk.raw');
    const writeSocket = join(dir, 'w.sock');
    const to = `http+unix:///?socket=${writeSocket}`;
    const serverArgs = ['repo', 'serve', '--repo', image.repoDir, '--socket', join(dir, 'r.sock'), '--write-socket', writeSocket];
    let expected = image.content;
    for (let round = 1; round <= 4; round++) {
      expected = await dirtyRound(dir, image, disk, expected, round);
      const before = await versions(image.repoDir);
      const server = await startServing(serverArgs);
      const snapshot = lazyboot(['snapshot', '--disk', disk, '--to', to, '--as', 'demo', '--json']);
      await killMoment(disk, round, snapshot);
      process.kill(server.pid, 'SIGKILL');
      await server.stop();
      const cut = await snapshot;
      t.log(`round ${round}: ${cut.exitCode === 0 ? 'finished before the kill' : cut.stderr.trim().split('\n').at(-1)}`);
      await assertAllWhole(t, image.repoDir);
      if (cut.exitCode !== 0) {
        t.true(oneLine(cut.stderr.split('\n').filter((line) => !/^lazyboot: (new )?target /.test(line)).join('\n')), cut.stderr);
        t.regex(cut.stderr, /cannot write to the repository at http\+unix:[^\n]*: check that `lazyboot repo serve --write-socket/);
        // The server may have died after the commit landed and before its answer left: then the
        // version is whole, and the retry finds it (same session, same content) and adds none.
        const appeared = await versions(image.repoDir);
        t.true(appeared.length === before.length || appeared.length === before.length + 1, `round ${round}: ${appeared}`);
        t.is(await marksHeld(disk), DIRTY_BLOCKS, `round ${round}: every mark is back in the map`);
        const restarted = await startServing(serverArgs);
        try {
          const retry = await lazyboot(['snapshot', '--disk', disk, '--to', to, '--as', 'demo', '--json']);
          t.is(retry.exitCode, 0, retry.stderr);
          const result = JSON.parse(retry.stdout);
          if (appeared.length > before.length) t.like(result, { ref: appeared.at(-1), existing: true }, `round ${round}: the retry found the version whose answer was lost`);
          t.deepEqual(await versions(image.repoDir), [...before, result.ref]);
          await assertEquals(dir, image.repoDir, result.ref, expected);
        } finally {
          await restarted.stop();
        }
      } else {
        // The kill came after the commit: a whole version, nothing left marked.
        const result = JSON.parse(cut.stdout);
        t.deepEqual(await versions(image.repoDir), [...before, result.ref]);
        await assertEquals(dir, image.repoDir, result.ref, expected);
      }
      t.is(await marksHeld(disk), 0);
    }
  }, { unsafeCleanup: true });
});

test('a crash after the commit and before the map recorded it: the retry finds that version (existing) and adds none', (t) => withDir(async ({ path: dir }) => {
  const { copyFile } = await import('node:fs/promises');
  const { BlockMap } = await import('../lib/map/block-map.js');
  const { writeSendingSet, sendingSetPath } = await import('../lib/snapshot/sending-set.js');
  const { snapshot } = await import('../lib/snapshot/snapshot.js');
  const { Repository } = await import('../lib/repo/repository.js');
  const image = await makeImage(dir, 'demo', { size: 16 * BS });
  const disk = join(dir, 'disk.raw');
  const served = await serveDisk([image.ref, '--disk', disk, '--from', image.repoDir, '--socket', join(dir, 'c.sock')]);
  if (!served.serving) throw new Error(served.stderr);
  await qemuIo(served.uri, [`write -P 0x71 ${2 * BS} ${BS}`, `write -P 0x72 ${5 * BS} ${BS}`]);
  await served.stop();
  const mapPath = `${disk}.map`;
  await copyFile(mapPath, join(dir, 'map-before'));

  const first = await snapshot({ disk, to: image.repoDir, as: 'demo' });
  t.like(first, { ref: 'demo@2', existing: false, sentBlocks: 2 });
  const repo = await Repository.open(image.repoDir, { create: false });
  const session = (await repo.resolve('demo@2')).session!;
  await repo.close();

  // Put the disk back in the state of a snapshot killed right after its commit: the marks moved to
  // the in-flight set (with that commit's session), the map not yet told.
  await copyFile(join(dir, 'map-before'), mapPath);
  const map = await BlockMap.open(mapPath, async () => {});
  const blocks = map.modified[0]!.copy();
  await writeSendingSet(sendingSetPath(mapPath), { target: 'origin', session, name: 'demo', blocks });
  map.clearModifiedWhere(0, blocks);
  await map.close();

  const retry = await snapshot({ disk, to: image.repoDir, as: 'demo' });
  t.like(retry, { ref: 'demo@2', existing: true, recoveredMarks: 2, dirtyBlocks: 2, sentBlocks: 0 });
  const after = await Repository.open(image.repoDir, { create: false });
  t.deepEqual(await after.versions('demo'), [1, 2], 'no second version');
  await after.close();
  t.is(await marksHeld(disk), 0);
  // The map now records demo@2: the next snapshot starts from it.
  t.like(await snapshot({ disk, to: image.repoDir, as: 'demo' }), { ref: 'demo@3', parent: 'demo@2', dirtyBlocks: 0 });
}, { unsafeCleanup: true }));
