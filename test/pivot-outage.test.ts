// The repository goes away while QEMU's block-stream fills the disk after a live pivot: the job
// pauses on the read error (on-error: stop) instead of failing, an outage that lasts is reported,
// and when the repository is back the job resumes by itself and completes; nothing is lost (the
// map says every block is present). Real QEMU, the tiny image, `lazyboot repo serve` stopped and
// started again on the same socket.
import path from 'node:path';
import test from 'ava';
import { ensureFixture } from '../fixtures/build.js';
import { tinyStayUpArgs } from '../guest/qemu-args.js';
import { launch, type LazyVm, type VmEvent } from '../lib/launch.js';
import { BlockMap } from '../lib/map/block-map.js';
import { FILL_STALL_REPORT_MS } from '../vmm/fill-job.js';
import { importImage, qemuProcessesMentioning, scratchDir, serveRepository } from './boot-support.js';

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
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, tiny.path, 'tiny');
  const served = await serveRepository(t, repoDir);
  const disk = path.join(scratch, 'tiny.raw');
  const lines: string[] = [];
  {
    await using vm = await launch({
      image: 'tiny', from: [served.uri], disk, memoryMiB: 256, timeoutMs: 300_000, fetchTimeoutMs: 3000,
      // Slow enough that the fill is far from done when the repository goes.
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
