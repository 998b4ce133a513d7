// The VM lifecycle state machine, alone and driving a real QEMU whose disk is an empty raw file
// (SeaBIOS finds nothing to boot): states, refused actions, failures and full teardown.
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { dir } from 'tmp-promise';
import { VmLifecycle } from '../vmm/lifecycle.js';
import { TransientVm, type VmDisk } from '../vmm/vm.js';
import { BootTimeout, IllegalVmAction, QemuExited } from '../vmm/errors.js';
import { processAlive } from './boot-support.js';

async function emptyDisk(t: import('ava').ExecutionContext): Promise<VmDisk & { closedCount: () => number }> {
  const scratch = await dir({ unsafeCleanup: true, prefix: 'lazyboot-test-' });
  t.teardown(() => scratch.cleanup());
  const file = path.join(scratch.path, 'empty.raw');
  await writeFile(file, Buffer.alloc(1024 * 1024));
  let closed = 0;
  return {
    spec: { kind: 'file', path: file },
    close: async () => void closed++,
    closedCount: () => closed,
  };
}

test('the state machine walks starting → booting → storage-ready → running → stopping → stopped', (t) => {
  const lifecycle = new VmLifecycle();
  t.is(lifecycle.feed({ type: 'qemu-up' }), 'booting');
  t.throws(() => lifecycle.assertAllowed('exec'), { instanceOf: IllegalVmAction, message: /cannot exec a VM that is booting/ });
  t.is(lifecycle.feed({ type: 'storage-ready' }), 'storage-ready');
  t.is(lifecycle.feed({ type: 'storage-ready' }), 'storage-ready'); // repeats change nothing
  t.is(lifecycle.feed({ type: 'guest-up' }), 'running');
  t.notThrows(() => lifecycle.assertAllowed('exec'));
  t.is(lifecycle.feed({ type: 'stop' }), 'stopping');
  t.is(lifecycle.feed({ type: 'qemu-exited' }), 'stopped');
  t.is(lifecycle.feed({ type: 'qemu-up' }), 'stopped'); // final states stay final
  t.deepEqual(lifecycle.history.map((step) => step.to), ['booting', 'storage-ready', 'running', 'stopping', 'stopped']);
});

test('QEMU exiting before anyone asked it to stop is a failure; with a stop it is a clean end', (t) => {
  const crashed = new VmLifecycle();
  crashed.feed({ type: 'qemu-up' });
  crashed.feed({ type: 'storage-ready' });
  crashed.feed({ type: 'guest-up' });
  t.is(crashed.feed({ type: 'qemu-exited' }), 'failed');
  const poweredOff = new VmLifecycle();
  poweredOff.feed({ type: 'qemu-up' });
  poweredOff.feed({ type: 'stop' }); // QMP SHUTDOWN from the guest
  t.is(poweredOff.feed({ type: 'qemu-exited' }), 'stopped');
  t.throws(() => poweredOff.assertAllowed('wait-ready'), { instanceOf: IllegalVmAction });
});

test('a VM on real QEMU: booting, exec refused, close() quits QEMU and removes everything', async (t) => {
  const disk = await emptyDisk(t);
  const vm = await TransientVm.start({ disk, accel: 'tcg', memoryMiB: 128 });
  t.teardown(() => vm.close());
  t.is(vm.state, 'booting');
  t.is(vm.accelerator?.accel, 'tcg');
  const pid = vm.pid;
  const runDir = vm.runDir!;
  t.true(processAlive(pid));
  t.true(existsSync(path.join(runDir, 'qmp.sock')));
  await t.throwsAsync(vm.exec('/bin/true'), { instanceOf: IllegalVmAction });
  await vm.close();
  t.is(vm.state, 'stopped');
  t.false(processAlive(pid));
  t.false(existsSync(runDir));
  t.is(disk.closedCount(), 1);
  await vm.close(); // idempotent
  t.is(disk.closedCount(), 1);
  const states = vm.events.history.filter((e) => e.type === 'state').map((e) => (e as { to: string }).to);
  t.deepEqual(states, ['booting', 'stopping', 'stopped']);
});

test('QEMU killed mid-boot: the VM fails with QemuExited, ready rejects, and it tears itself down', async (t) => {
  const disk = await emptyDisk(t);
  const vm = await TransientVm.start({ disk, accel: 'tcg', memoryMiB: 128 });
  t.teardown(() => vm.close());
  const runDir = vm.runDir!;
  process.kill(vm.pid!, 'SIGKILL');
  const error = await t.throwsAsync(vm.ready, { instanceOf: QemuExited });
  t.regex(error.message, /SIGKILL/);
  await vm.closed;
  t.is(vm.state, 'failed');
  t.false(existsSync(runDir));
  t.is(disk.closedCount(), 1);
});

test('QEMU stopped by a signal nobody here sent (SIGTERM to QEMU alone) is a failure, not a stop', async (t) => {
  const disk = await emptyDisk(t);
  const vm = await TransientVm.start({ disk, accel: 'tcg', memoryMiB: 128 });
  t.teardown(() => vm.close());
  // QEMU answers with SHUTDOWN (host-signal) and exits; this process asked for nothing.
  process.kill(vm.pid!, 'SIGTERM');
  const error = await t.throwsAsync(vm.ready, { instanceOf: QemuExited });
  t.regex(error.message, /signal from outside lazyboot/);
  await vm.closed;
  t.is(vm.state, 'failed');
  t.is(disk.closedCount(), 1);
});

test('a boot that does not reach running in time fails with BootTimeout and is torn down', async (t) => {
  const disk = await emptyDisk(t);
  const vm = await TransientVm.start({ disk, accel: 'tcg', memoryMiB: 128, timeoutMs: 1500 });
  t.teardown(() => vm.close());
  const pid = vm.pid;
  await t.throwsAsync(vm.ready, { instanceOf: BootTimeout, message: /did not reach running within 2 s/ });
  await vm.closed;
  t.false(processAlive(pid));
  t.is(vm.state, 'failed');
});
