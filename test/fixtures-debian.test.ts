// The Debian 12 image boots from a local disk under TCG: storage-ready comes from its initramfs
// before qemu-guest-agent answers; then the agent pings, reports / on virtio, runs commands,
// freezes and thaws; boot-complete comes from systemd; guest-shutdown ends QEMU.
import test from 'ava';
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { ensureFixture } from '../fixtures/build.js';
import { waitForAgent } from '../guest/agent-client.js';
import { GuestEvents, type GuestEvent } from '../guest/events.js';
import { waitForNativeStorage } from '../guest/readiness.js';
import { startQemuDirect } from './helpers/qemu-direct.js';
import { within } from './helpers/within.js';

const BOOT_TIMEOUT_MS = 180_000;

test('Debian image: storage-ready from the initramfs before the agent; ping, fsinfo on virtio, exec, freeze, shutdown', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const image = await ensureFixture('debian');
      // An overlay: QEMU opens the cached image read-only as its backing file.
      const disk = join(dir, 'debian.qcow2');
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', image.path, '-F', 'raw', disk]);
      const vm = startQemuDirect({ disk, format: 'qcow2', dir, memoryMiB: 512 });
      t.teardown(() => vm.stop());
      const started = Date.now();
      const events = await GuestEvents.connect(vm.eventsSocket);
      t.teardown(() => events.close());
      // Arrival times for the log only; the order is asserted from what had arrived, not from times.
      const arrivals = new Map<string, number>();
      events.on('event', (event: GuestEvent) => arrivals.set(event.event, Date.now() - started));

      const agent = await waitForAgent(vm.agentSocket, { timeoutMs: BOOT_TIMEOUT_MS });
      t.teardown(() => agent.close());
      const agentAt = Date.now() - started;
      // Every event received so far (events.received holds them all, even those that came before a
      // listener): storage-ready must be among them when the agent first answers.
      const beforeAgent = events.received.map((event) => event.event);
      const console = () => readFile(vm.consoleLog, 'utf8');

      t.true(beforeAgent.includes('storage-ready'), `events before the agent answered: ${beforeAgent.join(', ') || 'none'}`);
      const ready = await events.waitFor('storage-ready', { timeoutMs: 1 });
      t.like(ready, { source: 'initramfs', image: 'debian', disk: '/dev/vda', driver: 'virtio_blk', root: '/dev/vda2' });
      t.log(`storage-ready after ${arrivals.get('storage-ready') ?? '?'} ms (guest uptime ${ready.uptime} s), agent after ${agentAt} ms`);

      await agent.ping();
      const info = await agent.info();
      t.true(info.supported_commands.some((command) => command.name === 'guest-exec' && command.enabled));

      const root = await waitForNativeStorage(agent, { timeoutMs: 30_000 });
      t.is(root.disk['bus-type'], 'virtio');
      t.is(root.filesystem.type, 'ext4');

      const osRelease = await agent.exec('/bin/cat', ['/etc/os-release']);
      t.is(osRelease.exitCode, 0);
      t.regex(osRelease.stdout.toString(), /VERSION_CODENAME=bookworm/);
      const piped = await agent.exec('/bin/sh', ['-c', 'tr a-z A-Z; echo oops >&2; exit 3'], { input: Buffer.from('hello\n') });
      t.deepEqual(
        { exitCode: piped.exitCode, stdout: piped.stdout.toString(), stderr: piped.stderr.toString() },
        { exitCode: 3, stdout: 'HELLO\n', stderr: 'oops\n' },
      );

      t.true((await agent.fsfreeze()) >= 1);
      t.is(await agent.fsfreezeStatus(), 'frozen');
      t.true((await agent.fsthaw()) >= 1);
      t.is(await agent.fsfreezeStatus(), 'thawed');

      const complete = await events.waitFor('boot-complete', { timeoutMs: 90_000 });
      t.like(complete, { source: 'systemd', driver: 'virtio_blk' });

      await agent.shutdown();
      const exit = await within(vm.exited, 90_000);
      t.is(exit?.exitCode, 0, exit ? await console() : 'guest-shutdown did not end QEMU within 90 s');
      t.log(`events: ${[...arrivals].map(([name, at]) => `${name}@${at}ms`).join(', ')}; total ${Date.now() - started} ms`);
    },
    { unsafeCleanup: true },
  );
});
