// The tiny image boots from its own disk under TCG (SeaBIOS → syslinux → kernel → busybox init),
// announces storage-ready and boot-complete on the events port, writes to its disk, powers off.
// Serial: on a busy 2-core machine six TCG guests at once each take 40+ s; one at a time, a few s each.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { ensureFixture } from '../fixtures/build.js';
import { readTinyRootFile } from '../fixtures/tiny-disk.js';
import { GuestEventRejected } from '../guest/errors.js';
import { GuestEvents } from '../guest/events.js';
import { tinyStayUpArgs } from '../guest/qemu-args.js';
import { tinyPowerOff, tinyWriteFile } from '../guest/tiny-requests.js';
import { startQemuDirect, type DirectVm } from './helpers/qemu-direct.js';
import { within } from './helpers/within.js';

const BOOT_TIMEOUT_MS = 120_000;

/** A private copy of the cached tiny image: tests never write to the cache. */
async function tinyCopy(dir: string): Promise<string> {
  const image = await ensureFixture('tiny');
  const disk = join(dir, 'tiny.raw');
  await copyFile(image.path, disk);
  return disk;
}

/** Boots `disk`, collects the events until QEMU exits, and always tears both down. */
async function bootToPowerOff(
  dir: string,
  disk: string,
  diskBus?: 'virtio-blk' | 'virtio-scsi',
): Promise<{ vm: DirectVm; events: GuestEvents; exitCode?: number }> {
  const vm = startQemuDirect({ disk, dir, diskBus });
  const events = await GuestEvents.connect(vm.eventsSocket, { timeoutMs: 10_000 }).catch(async (error) => {
    await vm.stop();
    throw error;
  });
  try {
    const exit = await within(vm.exited, BOOT_TIMEOUT_MS);
    return { vm, events, exitCode: exit?.exitCode };
  } finally {
    events.close();
    await vm.stop();
  }
}

/** Boots a copy of tiny asked to stay up, until boot-complete; the test's teardown stops both. */
async function bootTinyStayingUp(t: ExecutionContext, dir: string) {
  const disk = await tinyCopy(dir);
  const vm = startQemuDirect({ disk, dir, qemuArgs: tinyStayUpArgs() });
  t.teardown(() => vm.stop());
  const events = await GuestEvents.connect(vm.eventsSocket);
  t.teardown(() => events.close());
  const complete = await events.waitFor('boot-complete', { timeoutMs: BOOT_TIMEOUT_MS });
  return { disk, vm, events, complete };
}

test.serial('tiny image boots from its disk, emits storage-ready naming disk and driver, and powers off with exit code 0', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const disk = await tinyCopy(dir);
      const { events, exitCode, vm } = await bootToPowerOff(dir, disk);
      const console = await readFile(vm.consoleLog, 'utf8');
      t.is(exitCode, 0, console);
      const names = events.received.map((event) => event.event);
      t.deepEqual(names, ['storage-ready', 'boot-complete'], console);
      const ready = events.received[0];
      t.like(ready, { disk: '/dev/vda', driver: 'virtio_blk', root: '/dev/vda2', image: 'tiny', bootCount: 1 });
      t.true(ready.uptime > 0 && ready.uptime < 30, `uptime ${ready.uptime}`);
      // The init read its 4 MiB payload back intact from the disk.
      t.like(events.received[1], { payloadOk: true, stayUp: false });
      // Booted by firmware and bootloader from the disk itself: syslinux ran, no -kernel.
      t.regex(console, /lazyboot: \{"event":"storage-ready"/);
    },
    { unsafeCleanup: true },
  );
});

test.serial('tiny image on virtio-scsi: storage-ready names the SCSI disk and the sd driver', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const disk = await tinyCopy(dir);
      const { events, exitCode } = await bootToPowerOff(dir, disk, 'virtio-scsi');
      t.is(exitCode, 0);
      t.like(events.received[0], { event: 'storage-ready', disk: '/dev/sda', driver: 'sd', root: '/dev/sda2' });
    },
    { unsafeCleanup: true },
  );
});

test.serial('tiny image writes to its own disk: the boot counter persists across boots', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const disk = await tinyCopy(dir);
      const first = await bootToPowerOff(dir, disk);
      const second = await bootToPowerOff(dir, disk);
      t.is(first.exitCode, 0);
      t.is(second.exitCode, 0);
      t.is(first.events.received[0]?.bootCount, 1);
      t.is(second.events.received[0]?.bootCount, 2);
    },
    { unsafeCleanup: true },
  );
});

test.serial('tiny image stays up after boot-complete when fw_cfg opt/org.lazyboot/stay-up is 1', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const { vm, events, complete } = await bootTinyStayingUp(t, dir);
      t.is(complete.stayUp, true);
      const stillRunning = (await within(vm.exited, 3000)) === undefined;
      t.true(stillRunning, 'QEMU exited although the guest was asked to stay up');
      await vm.stop();
      events.close();
    },
    { unsafeCleanup: true },
  );
});

test.serial('a host that never connects to the events port does not hang the tiny boot', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const disk = await tinyCopy(dir);
      const vm = startQemuDirect({ disk, dir });
      t.teardown(() => vm.stop());
      const exit = await within(vm.exited, BOOT_TIMEOUT_MS);
      t.is(exit?.exitCode, 0, 'QEMU did not power off on its own');
      // The guest waited a bounded time for the host, kept its events queued, and went on.
      const console = await readFile(vm.consoleLog, 'utf8');
      t.regex(console, /lazyboot: host not listening after 3s, kept 1 line\(s\) queued/);
      t.regex(console, /lazyboot: host not listening after 3s, kept 2 line\(s\) queued/);
      t.regex(console, /lazyboot: \{"event":"boot-complete"/);
    },
    { unsafeCleanup: true },
  );
});

test.serial('tiny image kept up writes a file on request; it lands on the disk file; a bad request is refused; poweroff on request', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const { disk, vm, events } = await bootTinyStayingUp(t, dir);

      const written = await tinyWriteFile(events, 'after-boot.bin', 256, { timeoutMs: 30_000 });
      t.is(written.file, '/data/after-boot.bin');
      t.regex(written.sha256, /^[0-9a-f]{64}$/);
      await t.throwsAsync(tinyWriteFile(events, '../escape', 1, { timeoutMs: 30_000 }), { instanceOf: GuestEventRejected });

      await tinyPowerOff(events, { timeoutMs: 30_000 });
      const exit = await within(vm.exited, 30_000);
      t.is(exit?.exitCode, 0);
      // Read back from the raw file QEMU wrote: what the guest wrote is on the disk.
      const onDisk = await readTinyRootFile(disk, '/data/after-boot.bin');
      t.is(onDisk.length, 256 * 1024);
      t.is(createHash('sha256').update(onDisk).digest('hex'), written.sha256);
      t.is((await readTinyRootFile(disk, '/var/lib/lazyboot/boot-count')).toString(), '1\n');
    },
    { unsafeCleanup: true },
  );
});
