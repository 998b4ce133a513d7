// `lazyboot boot --pivot reboot`: the transient QEMU boots the tiny image on the copy-on-read
// device until storage-ready and is shut down; a second, native QEMU boots the machine from the
// native graph. What the first boot read is local, so the native boot reads zero bytes from the
// repository before its storage-ready (counted by the COR device); the fill then completes.
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { STAY_UP_FW_CFG_NAME } from '../guest/qemu-args.js';
import { BlockMap } from '../lib/map/block-map.js';
import { CLI, importImage, processAlive, qemuProcessesMentioning, scratchDir, serveRepository, watchOutput } from './boot-support.js';
import { extractPartition, readGuestFile } from './helpers/guest-filesystem.js';

test('tiny, --pivot reboot: the transient QEMU stops at storage-ready, a native QEMU boots the machine and fetches 0 bytes before its storage-ready; the fill completes', async (t) => {
  t.timeout(400_000);
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const served = await serveRepository(t, await importImage(scratch, tiny.path, 'tiny'));
  const disk = path.join(scratch, 'tiny.raw');
  const stayUp = ['--qemu-arg=-fw_cfg', `--qemu-arg=name=${STAY_UP_FW_CFG_NAME},string=1`];
  const child = execa('node', [CLI, 'boot', 'tiny', '--from', served.uri, '--disk', disk, '--memory', '256M', '--timeout', '300s', '--pivot', 'reboot', ...stayUp], { reject: false, detached: true });
  const childErr = watchOutput(child, 'stderr');
  t.teardown(() => void child.kill('SIGKILL'));
  const transientPid = Number((await childErr.seen(/the transient boot reached storage-ready \(hook\) at [\d.]+ s; its QEMU \(pid (\d+)\) is shut down/))[1]);
  const nativePid = Number((await childErr.seen(/QEMU up \(pid (\d+)\)/))[1]);
  t.not(nativePid, transientPid, 'a second QEMU boots the machine');
  t.false(processAlive(transientPid), 'the transient QEMU is gone');
  await childErr.seen(/QEMU booted on the native graph at/);
  const [, fetched] = await childErr.seen(/native boot \(reboot\): (\d+) bytes fetched from the repository before storage-ready/);
  t.is(Number(fetched), 0, 'the native boot read only what the first boot made local');
  await childErr.seen(/fill complete at/);
  process.kill(-child.pid!, 'SIGINT');
  const result = await child;
  t.log(result.stderr);
  t.is(result.exitCode, 130);
  t.notRegex(result.stderr, /pivot to native at/, 'no live pivot');
  t.regex(result.stdout, /pivot: native boot \(QEMU started on the native graph\); fill \(QEMU block-stream\): complete/);
  const map = await BlockMap.open(`${disk}.map`, async () => {});
  try {
    t.is(map.counts().present, Math.ceil(tiny.sizeBytes / 65536));
  } finally {
    await map.close();
  }
  const root = path.join(scratch, 'root.ext4');
  await extractPartition(disk, 2, root);
  t.is((await readGuestFile(root, '/var/lib/lazyboot/boot-count')).trim(), '2', 'two boots: the transient one and the native one');
  t.deepEqual(await qemuProcessesMentioning(scratch), []);
});
