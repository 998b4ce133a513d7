// A live snapshot after the pivot, on debian-plain (stock qemu-guest-agent, no lazyboot hooks: the
// pivot's storage-ready comes from the agent). The guest writes a file before the pivot and one
// after it; it is snapshotted with `lazyboot snapshot NAME --as IMAGE` while it keeps rewriting a
// third file and while QEMU's fill still runs. The snapshot covers both phases (the map's W bits
// and QEMU's writes bitmap) through QEMU's fleecing. Then: a snapshot right after ships only what
// was written between (the writes made during the first one included); one with the guest idle
// ships next to nothing; once the fill has completed (the COR device gone) a snapshot whose
// repository server is killed mid-way loses no mark: the next one ships the same blocks; the
// snapshot on exit ships only what was written since. Every checked version exports with a root
// file system that checks clean (e2fsck -fn) and holds the files.
// One VM for the whole file.
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { launch, type LazyVm } from '../lib/launch.js';
import { openVmControl } from '../lib/control/vm-control.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';
import { filesInVersion, inGuest } from './helpers/snapshot-versions.js';
import { startServing, type ServedProcess } from './helpers/served-process.js';

const BOOT_TIMEOUT_MS = 300_000;
const MiB = 1024 * 1024;

/** Writes `bytes` of random data to FILE in the guest, synced; its sha256. */
async function writeFile(vm: LazyVm, file: string, bytes: number): Promise<string> {
  return (await inGuest(vm, `mkdir -p ${path.dirname(file)} && head -c ${bytes} /dev/urandom > ${file} && sync && sha256sum ${file}`)).split(' ')[0]!;
}

test('after the pivot (debian-plain, fill running): `lazyboot snapshot NAME` covers both phases through QEMU, the next ships only what was written between, a failed one loses no mark', async (t) => {
  t.timeout(3 * BOOT_TIMEOUT_MS);
  const image = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  // The snapshot's temp dir (fleecing overlay, NBD socket) is made in this process: look for leftovers here.
  const tmp = path.join(scratch, 'tmp');
  await mkdir(tmp);
  process.env.TMPDIR = tmp;
  const repoDir = await importImage(scratch, image.path, 'img');
  const writeSocket = path.join(scratch, 'w.sock');
  const serveArgs = ['repo', 'serve', '--repo', repoDir, '--socket', path.join(scratch, 'r.sock'), '--write-socket', writeSocket];
  let server: ServedProcess = await startServing(serveArgs);
  t.teardown(() => server.stop());
  const to = `http+unix:///?socket=${writeSocket}`;
  const runtime = path.join(scratch, 'runtime');
  await mkdir(runtime, { mode: 0o700 });
  const lines: string[] = [];
  const disk = path.join(scratch, 'disk.raw');
  const vm = await launch({
    image: 'img', from: [repoDir], disk, agent: true, pivot: 'none', memoryMiB: 512,
    timeoutMs: BOOT_TIMEOUT_MS, log: (line) => lines.push(line), snapshotOnExit: { as: 'img-exit', to },
  });
  t.teardown(() => vm.close());
  const control = await openVmControl({ name: 'native-vm', image: 'img', dir: path.join(runtime, 'lazyboot', 'vms') });
  control.attach(vm);
  t.teardown(() => control.close());
  await vm.ready;
  const startedAt = Date.now();
  const at = (): string => `${((Date.now() - startedAt) / 1000).toFixed(0)} s after boot`;
  t.log(`booted: ${at()}`);

  // Phase 1 (COR device): a file written before the pivot. Then the pivot, with a slow fill.
  const sums: Record<string, string> = {};
  sums['/srv/snap/before'] = await writeFile(vm, '/srv/snap/before', 2 * MiB);
  const pivot = await vm.pivot({ fill: true, fillRate: 64 * MiB });
  t.is(vm.storageReadySource, 'agent');
  t.log(`pivoted: guest paused ${pivot.pauseMs.toFixed(1)} ms`);
  // Phase 2 (QEMU's graph): a file written after it, and a writer that keeps rewriting another.
  sums['/srv/snap/after'] = await writeFile(vm, '/srv/snap/after', 2 * MiB);
  await inGuest(vm, 'nohup sh -c "echo \\$\\$ > /run/churn.pid; while :; do head -c 1048576 /dev/urandom > /var/tmp/churn; sync; done" >/dev/null 2>&1 &');

  // 1. Through the CLI and the control socket, while the guest writes and the fill runs.
  t.is(vm.status().fill, 'running', 'the fill is still running when the snapshot starts');
  const env = { XDG_RUNTIME_DIR: runtime, TMPDIR: tmp };
  const cli = await execa('node', [CLI, 'snapshot', 'native-vm', '--as', 'img-native', '--to', to, '--json'], { reject: false, env });
  t.is(cli.exitCode, 0, cli.stderr);
  const first = JSON.parse(cli.stdout);
  const fillAfterFirst = vm.status().fill;
  t.is(first.ref, 'img-native@1');
  t.is(first.parent, 'img@1');
  t.is(first.graph, 'native');
  t.is(first.consistency, 'frozen');
  t.true(first.frozenFilesystems >= 1);
  // Both files' blocks at least (4 MiB), all sent: this repository lacked them.
  t.true(first.dirtyBlocks * first.blockSize >= 4 * MiB, `${first.dirtyBlocks} dirty blocks`);
  t.true(first.blockBytesSent <= first.dirtyBlocks * first.blockSize);
  t.true(first.wireBytesSent + first.wireBytesReceived <= first.dirtyBlocks * first.blockSize + first.overheadBytes);
  t.log(`1st (CLI, fill ${fillAfterFirst} after it): ${first.dirtyBlocks} dirty blocks of ${first.blockSize} B, ${first.sentBlocks} sent, ${first.dedupedBlocks} deduplicated; ${(first.blockBytesSent / MiB).toFixed(1)} MiB of blocks, overhead ${first.overheadBytes} B; frozen ${first.frozenMs.toFixed(1)} ms (freeze call ${first.freezeMs.toFixed(0)} ms, QEMU transaction ${first.writesHeldMs.toFixed(1)} ms); ${first.copiedBeforeWrite} blocks copied by QEMU; ${first.seconds.toFixed(1)} s`);

  // 2. The writer stops; one more file; a snapshot right after ships what was written since the
  // first one's instant: the writer's last rounds (made during the first snapshot too) and the file.
  sums['/var/tmp/churn'] = (await inGuest(vm, 'kill $(cat /run/churn.pid); sleep 1; sync; sha256sum /var/tmp/churn')).split(' ')[0]!;
  sums['/srv/snap/between'] = await writeFile(vm, '/srv/snap/between', 256 * 1024);
  const second = await vm.snapshot({ as: 'img-native', to });
  t.is(second.ref, 'img-native@2');
  t.is(second.graph, 'native');
  t.true(second.dirtyBlocks < first.dirtyBlocks, `${second.dirtyBlocks} dirty blocks after ${first.dirtyBlocks}`);
  t.true(second.dirtyBlocks * second.blockSize >= 256 * 1024);
  t.true(second.blockBytesSent <= second.dirtyBlocks * second.blockSize);
  t.log(`2nd (API): ${second.dirtyBlocks} dirty blocks, ${second.sentBlocks} sent; frozen ${second.frozenMs.toFixed(1)} ms`);
  // 3. The guest idle: next to nothing (its journal and times may touch a few blocks).
  const third = await vm.snapshot({ as: 'img-native', to });
  t.is(third.ref, 'img-native@3');
  t.true(third.dirtyBlocks < second.dirtyBlocks && third.blockBytesSent <= 1 * MiB, `${third.dirtyBlocks} dirty blocks with the guest idle`);
  t.log(`3rd (idle): ${third.dirtyBlocks} dirty blocks, ${third.sentBlocks} sent`);

  // 4. The fill completes (the COR device leaves); a snapshot then fails mid-way: the repository
  // server is killed at its first batch. No version, QEMU's fleecing torn down, every mark kept.
  // (vm.filled is for a pivot at launch; this one was asked for later: its end is the status.)
  while (vm.status().fill === 'running' || vm.status().fill === 'paused') await new Promise((resolve) => setTimeout(resolve, 500));
  t.is(vm.status().fill, 'complete');
  t.log(`fill complete: ${at()}`);
  sums['/srv/snap/last'] = await writeFile(vm, '/srv/snap/last', 512 * 1024);
  let failedDirty = 0;
  const failing = vm.snapshot({
    as: 'img-native', to, batchBytes: 64 * 1024,
    onProgress: (progress) => {
      if (failedDirty > 0) return;
      failedDirty = progress.dirtyBlocks;
      process.kill(server.pid, 'SIGKILL');
    },
  });
  const failure = await t.throwsAsync(failing);
  t.log(`killed mid-way: ${failure?.message}`);
  t.true(failedDirty > 0);
  t.false((await vm.blockNodes()).some((node) => node.nodeName.startsWith('lazyboot-fleece')), 'no fleecing node left in QEMU');
  await rm(writeSocket, { force: true });
  await rm(path.join(scratch, 'r.sock'), { force: true });
  server = await startServing(serveArgs);
  const retried = await vm.snapshot({ as: 'img-native', to });
  t.is(retried.ref, 'img-native@4', 'the failed snapshot committed nothing');
  t.true(retried.dirtyBlocks >= failedDirty, `${retried.dirtyBlocks} blocks shipped after ${failedDirty} in the failed one`);
  t.log(`after the failure: ${retried.dirtyBlocks} dirty blocks, ${retried.sentBlocks} sent (the failed one had ${failedDirty})`);
  t.deepEqual((await leftovers(tmp)).filter((entry) => entry.startsWith('lazyboot-snapshot-')), [], 'no snapshot temp dir left');
  await vm.close();
  t.log(`VM closed: ${at()}`);
  // 5. --snapshot-on-exit after the pivot: the fold put QEMU's writes since v4 in the map, and only
  // those: what the live snapshots shipped (the 2 MiB written after the pivot, ...) is not sent again.
  const onExit = (await vm.snapshotted)!;
  t.is(onExit.ref, 'img-exit@1');
  t.is(onExit.parent, 'img-native@4');
  t.true(onExit.dirtyBlocks * onExit.blockSize < 2 * MiB, `${onExit.dirtyBlocks} dirty blocks at exit`);
  t.log(`on exit: ${onExit.dirtyBlocks} dirty blocks, ${onExit.sentBlocks} sent`);
  t.deepEqual(await qemuProcessesMentioning(scratch), []);

  // Each version checks clean and holds what was written before its instant.
  const files = Object.keys(sums);
  const v1 = await filesInVersion(t, scratch, repoDir, 'img-native@1', files);
  t.is(v1['/srv/snap/before'], sums['/srv/snap/before'], 'v1 has the file written before the pivot');
  t.is(v1['/srv/snap/after'], sums['/srv/snap/after'], 'v1 has the file written after the pivot');
  t.is(v1['/srv/snap/between'], 'missing');
  const v2 = await filesInVersion(t, scratch, repoDir, 'img-native@2', files);
  for (const file of ['/srv/snap/before', '/srv/snap/after', '/var/tmp/churn', '/srv/snap/between']) t.is(v2[file], sums[file], `v2: ${file}`);
  const v4 = await filesInVersion(t, scratch, repoDir, 'img-native@4', files);
  t.deepEqual(v4, sums, 'v4 has every file');
  t.notRegex(lines.join('\n'), /EXT4-fs error|I\/O error/);
  t.log(`versions checked: ${at()}`);
});
