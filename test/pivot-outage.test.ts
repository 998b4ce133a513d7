// The repository goes away while QEMU's block-stream fills the disk after a live pivot: the job
// pauses on the read error (on-error: stop) instead of failing, an outage that lasts is reported,
// and when the repository is back the job resumes by itself and completes; nothing is lost (the
// map says every block is present). Real QEMU, the tiny image, `lazyboot repo serve` stopped and
// started again on the same socket. An outage longer than the fill waits stops it with a report;
// a later boot of the disk finishes it.
import path from 'node:path';
import test from 'ava';
import { ensureFixture } from '../fixtures/build.js';
import { tinyStayUpArgs } from '../guest/qemu-args.js';
import { launch, type LazyVm, type VmEvent } from '../lib/launch.js';
import { BlockMap } from '../lib/map/block-map.js';
import { FILL_STALL_REPORT_MS } from '../vmm/fill-job.js';
import { execa } from 'execa';
import { STAY_UP_FW_CFG_NAME } from '../guest/qemu-args.js';
import { CLI, importImage, qemuProcessesMentioning, scratchDir, serveRepository, tinyWithUnreadTail, watchOutput } from './boot-support.js';

/** Resolves with the first event of `type` (earlier ones included); rejects when the VM ends first. */
function nextEvent<T extends VmEvent['type']>(vm: LazyVm, type: T, timeoutMs: number): Promise<Extract<VmEvent, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} within ${timeoutMs} ms`)), timeoutMs);
    const check = (event: VmEvent) => {
      if (event.type === type) {
        clearTimeout(timer);
        resolve(event as Extract<VmEvent, { type: T }>);
      } else if (event.type === 'torn-down') {
        clearTimeout(timer);
        reject(new Error(`the VM ended before ${type}: ${vm.failure?.message}`));
      }
    };
    for (const event of vm.events.history) check(event);
    vm.events.on(check);
  });
}

test('the repository dies during the fill: the job pauses, the long outage is reported, and it resumes and completes once the repository is back', async (t) => {
  t.timeout(600_000);
  const scratch = await scratchDir(t);
  const tiny = await tinyWithUnreadTail(scratch, (await ensureFixture('tiny')).path);
  const repoDir = await importImage(scratch, tiny.path, 'tiny');
  const served = await serveRepository(t, repoDir);
  const disk = path.join(scratch, 'tiny.raw');
  const lines: string[] = [];
  {
    await using vm = await launch({
      image: 'tiny', from: [served.uri], disk, memoryMiB: 256, timeoutMs: 300_000, fetchTimeoutMs: 3000,
      // Slow enough that the fill is far from done when the repository goes (~16 s for the 8 MiB
      // tail; the zero blocks are mapped to the disk at the pivot, not streamed).
      pivot: 'live', fill: true, fillRate: 512 * 1024, qemuArgs: tinyStayUpArgs(), log: (line) => lines.push(line),
    });
    t.truthy(await vm.pivoted, vm.failure?.message);
    await nextEvent(vm, 'fill-progress', 60_000);
    await served.stop();
    const paused = await nextEvent(vm, 'fill-paused', 120_000);
    t.log(`fill paused: ${paused.message}`);
    const stalled = await nextEvent(vm, 'fill-stalled', FILL_STALL_REPORT_MS + 120_000);
    t.true(stalled.stalledMs >= FILL_STALL_REPORT_MS);
    t.is(vm.status().fill, 'paused');
    t.is(vm.state, 'running', 'the guest runs on through the outage');
    await serveRepository(t, repoDir); // back, on the same socket
    const resumed = await nextEvent(vm, 'fill-resumed', 120_000);
    t.log(`fill resumed after ${resumed.pausedMs} ms`);
    await nextEvent(vm, 'fill-complete', 300_000);
    t.true(vm.events.history.every((event) => event.type !== 'fill-failed'));
  }
  t.true(lines.some((line) => /from the writes bitmap/.test(line)), lines.join('\n'));
  const map = await BlockMap.open(`${disk}.map`, async () => {});
  try {
    t.is(map.counts().present, Math.ceil(tiny.sizeBytes / 65536), 'every block present: nothing lost to the outage');
  } finally {
    await map.close();
  }
  t.deepEqual(await qemuProcessesMentioning(scratch), []);
});

test('the repository stays away longer than the fill waits (--fill-outage): one line says the fill stopped and what to do, the guest runs on; a later `lazyboot boot` of the same disk completes the fill', async (t) => {
  t.timeout(600_000);
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, tiny.path, 'tiny');
  const served = await serveRepository(t, repoDir);
  const disk = path.join(scratch, 'tiny.raw');
  const blocks = Math.ceil(tiny.sizeBytes / 65536);
  const stayUp = ['--qemu-arg=-fw_cfg', `--qemu-arg=name=${STAY_UP_FW_CFG_NAME},string=1`];
  const boot = (extra: string[]) => {
    const child = execa('node', [CLI, 'boot', 'tiny', '--from', served.uri, '--disk', disk, '--memory', '256M', '--timeout', '300s', ...stayUp, ...extra], { reject: false, detached: true });
    t.teardown(() => void child.kill('SIGKILL'));
    return child;
  };
  // Slow enough that the fill is far from done when the repository goes.
  const first = boot(['--fill-rate', '512K', '--fill-outage', '8s', '--fetch-timeout', '2s']);
  const firstErr = watchOutput(first, 'stderr');
  await firstErr.seen(/pivot to native at/);
  await served.stop();
  const [stopped] = await firstErr.seen(/fill stopped at .*/);
  t.log(stopped);
  t.regex(stopped, /the fill \(QEMU block-stream\) stopped: the repository was unreachable for \d+ s .*the fill waits 8 s\): .*boot the same --disk again/);
  process.kill(-first.pid!, 'SIGINT'); // the guest ran on until this Ctrl-C
  const firstResult = await first;
  t.log(firstResult.stderr);
  t.is(firstResult.exitCode, 130);
  t.regex(firstResult.stdout, /fill \(QEMU block-stream\): stopped at/);
  const partial = await BlockMap.open(`${disk}.map`, async () => {});
  const presentAfterOutage = partial.counts().present;
  await partial.close();
  t.true(presentAfterOutage < blocks, `the fill did not finish (${presentAfterOutage}/${blocks})`);

  await serveRepository(t, repoDir); // back, on the same socket
  const second = boot([]);
  const secondErr = watchOutput(second, 'stderr');
  await secondErr.seen(/fill complete at/);
  process.kill(-second.pid!, 'SIGINT');
  const secondResult = await second;
  t.is(secondResult.exitCode, 130, secondResult.stderr);
  const map = await BlockMap.open(`${disk}.map`, async () => {});
  try {
    t.is(map.counts().present, blocks, 'every block present: the later boot completed the fill');
  } finally {
    await map.close();
  }
  t.deepEqual(await qemuProcessesMentioning(scratch), []);
});
