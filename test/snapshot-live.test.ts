// liveSnapshot() on a disk served by a real copy-on-read device while qemu-io writes through its
// NBD export: the new version is the disk at the snapshot's instant although blocks are rewritten
// while it is sent (copy-before-write), the rewrites stay marked for the next snapshot, a failed
// freeze or a pivot under way loses no mark. (The frozen Debian guest: snapshot-live-vm.test.ts.)
import test from 'ava';
import { withDir } from 'tmp-promise';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { makeImage, qemuIo, type TestImage } from './cor-fixtures.js';
import { lazyboot } from './helpers/repo-cli.js';
import { openCorDevice, type CorDevice, type OpenedDisk } from '../lib/cor/device.js';
import { liveSnapshot, type GuestFreezer, type LiveDisk } from '../lib/snapshot/live-snapshot.js';
import { GuestFreezeFailed, LiveSnapshotAfterPivot, LiveSnapshotBusy } from '../lib/snapshot/errors.js';

const BS = 65536;

async function openLive(dir: string, image: TestImage): Promise<{ device: CorDevice; disk: LiveDisk }> {
  let opened!: OpenedDisk;
  const path = join(dir, 'disk.raw');
  const device = await openCorDevice({
    image: image.ref, disk: path, from: [image.repoDir], socketPath: join(dir, 'cor.sock'),
    attach: async (disk) => {
      opened = disk;
      return { close: async () => undefined };
    },
  });
  return { device, disk: { path, map: opened.backend.map, local: opened.local, backend: opened.backend } };
}

function written(content: Buffer, writes: ReadonlyArray<readonly [block: number, pattern: number]>): Buffer {
  const copy = Buffer.from(content);
  for (const [block, pattern] of writes) copy.fill(pattern, block * BS, (block + 1) * BS);
  return copy;
}

async function assertVersion(t: any, dir: string, repoDir: string, ref: string, expected: Buffer): Promise<void> {
  const expectedPath = join(dir, `expected-${ref}.raw`);
  await writeFile(expectedPath, expected);
  const exported = join(dir, `export-${ref}.raw`);
  const result = await lazyboot(['image', 'export', ref, exported, '--repo', repoDir]);
  t.is(result.exitCode, 0, result.stderr);
  const compared = await execa('cmp', [exported, expectedPath], { reject: false });
  t.is(compared.exitCode, 0, `${ref}: ${compared.stdout}`);
}

/** A freezer standing in for the guest agent, recording the order of the calls. */
function recordingFreezer(calls: string[], failFreeze = false): GuestFreezer {
  return {
    freeze: async () => {
      calls.push('freeze');
      if (failFreeze) throw new Error('guest-fsfreeze-freeze: command is disabled');
      return 1;
    },
    thaw: async () => {
      calls.push('thaw');
      return 1;
    },
  };
}

test('a live snapshot is the disk at its instant: blocks rewritten before they were sent are copied first and stay marked for the next snapshot', (t) => withDir(async ({ path: dir }) => {
  t.timeout(120_000);
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const { device, disk } = await openLive(dir, image);
  try {
    const origin = disk.map.targetIndex('origin');
    await qemuIo(device.uri, [`write -P 0xaa ${3 * BS} ${BS}`, `write -P 0xbb ${10 * BS} ${BS}`, `write -P 0xcc ${40 * BS} ${BS}`, `write -P 0xdd ${50 * BS} ${BS}`]);
    const atInstant = written(image.content, [[3, 0xaa], [10, 0xbb], [40, 0xcc], [50, 0xdd]]);
    const calls: string[] = [];
    let rewrote = false;
    const first = await liveSnapshot(disk, {
      to: image.repoDir, as: 'demo-live', freezer: recordingFreezer(calls), batchBytes: BS,
      onProgress: async (progress) => {
        if (rewrote || progress.doneBlocks !== 1) return;
        rewrote = true;
        calls.push('rewrite');
        // Block 3 is sent already, 40 not yet (copied first), 60 is not in the set (a fresh mark).
        await qemuIo(device.uri, [`write -P 0x11 ${3 * BS} ${BS}`, `write -P 0x22 ${40 * BS} ${BS}`, `write -P 0x33 ${60 * BS} ${BS}`]);
      },
    });
    t.deepEqual(calls, ['freeze', 'thaw', 'rewrite'], 'frozen and thawed at the instant, before any block was sent');
    t.is(first.ref, 'demo-live@1');
    t.is(first.consistency, 'frozen');
    t.is(first.dirtyBlocks, 4);
    t.is(first.sentBlocks, 4);
    t.is(first.copiedBeforeWrite, 1, 'only block 40 was rewritten before it was sent');
    t.is(first.copiedBytes, BS);
    t.true(first.frozenMs >= 0 && first.frozenMs < 60_000);
    t.log(`frozen ${first.frozenMs.toFixed(1)} ms, writes held ${first.writesHeldMs.toFixed(1)} ms, ${first.copiedBeforeWrite} block copied before write`);
    await assertVersion(t, dir, image.repoDir, 'demo-live@1', atInstant);
    const marked = [3, 10, 40, 50, 60].filter((block) => disk.map.isModified(block, origin));
    t.deepEqual(marked, [3, 40, 60], 'the rewrites are marked again, the shipped blocks are not');

    const second = await liveSnapshot(disk, { to: image.repoDir, as: 'demo-live' });
    t.is(second.ref, 'demo-live@2');
    t.is(second.parent, 'demo-live@1');
    t.is(second.consistency, 'crash-consistent');
    t.is(second.dirtyBlocks, 3);
    t.is(second.copiedBeforeWrite, 0);
    await assertVersion(t, dir, image.repoDir, 'demo-live@2', written(atInstant, [[3, 0x11], [40, 0x22], [60, 0x33]]));
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));

test('a live snapshot refuses a second one under way, a failed freeze and a pivot under way without losing a mark', (t) => withDir(async ({ path: dir }) => {
  t.timeout(120_000);
  const image = await makeImage(dir, 'demo', { size: 32 * BS });
  const { device, disk } = await openLive(dir, image);
  try {
    const origin = disk.map.targetIndex('origin');
    await qemuIo(device.uri, [`write -P 0xaa ${2 * BS} ${2 * BS}`, `write -P 0xbb ${20 * BS} ${BS}`]);
    const marks = () => disk.map.modified[origin]!.count();
    t.is(marks(), 3);

    await t.throwsAsync(liveSnapshot(disk, { to: image.repoDir, as: 'bad name!' }), { message: /image name/i });

    const calls: string[] = [];
    const failed = await t.throwsAsync(liveSnapshot(disk, { to: image.repoDir, as: 'demo-live', freezer: recordingFreezer(calls, true) }), { instanceOf: GuestFreezeFailed });
    t.regex(failed!.message, /could not be frozen: .*disabled/);
    t.deepEqual(calls, ['freeze', 'thaw'], 'a failed freeze is thawed (it may have frozen some)');
    t.is(marks(), 3, 'no mark lost');

    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow = liveSnapshot(disk, { to: image.repoDir, as: 'demo-live', batchBytes: BS, onProgress: () => gate });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await t.throwsAsync(liveSnapshot(disk, { to: image.repoDir, as: 'demo-other' }), { instanceOf: LiveSnapshotBusy });
    release();
    t.is((await slow).ref, 'demo-live@1');
    t.is(marks(), 0);

    // A pivot (the device turns read-through) while blocks are still to send: refused, marks back.
    await qemuIo(device.uri, [`write -P 0xcc ${5 * BS} ${BS}`, `write -P 0xdd ${25 * BS} ${BS}`]);
    const pivoted = liveSnapshot(disk, { to: image.repoDir, as: 'demo-live', batchBytes: BS, onProgress: () => disk.backend.enterReadThrough() });
    await t.throwsAsync(pivoted, { instanceOf: LiveSnapshotAfterPivot, message: /pivoted .* while/ });
    t.is(marks(), 2, 'the marks of the failed snapshot are back');
    await t.throwsAsync(liveSnapshot(disk, { to: image.repoDir, as: 'demo-live' }), { instanceOf: LiveSnapshotAfterPivot, message: /no longer sees the writes/ });
    const versions = await lazyboot(['image', 'ls', '--repo', image.repoDir]);
    t.is(versions.exitCode, 0, versions.stderr);
    t.regex(versions.stdout, /demo-live@1/);
    t.notRegex(versions.stdout, /demo-live@2|demo-other/, 'no version of the failed snapshots');
  } finally {
    await device.close();
  }
}, { unsafeCleanup: true }));
