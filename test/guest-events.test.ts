// The events reader ends cleanly when QEMU dies mid-boot: waiters get a typed error, nothing throws.
import test from 'ava';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { ensureFixture } from '../fixtures/build.js';
import { GuestEventsClosed } from '../guest/errors.js';
import { GuestEvents } from '../guest/events.js';
import { startQemuDirect } from './helpers/qemu-direct.js';

test('QEMU killed before storage-ready: waitFor rejects with GuestEventsClosed, no uncaught error', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const disk = join(dir, 'tiny.raw');
      await copyFile((await ensureFixture('tiny')).path, disk);
      const vm = startQemuDirect({ disk, dir });
      t.teardown(() => vm.stop());
      const events = await GuestEvents.connect(vm.eventsSocket);
      t.teardown(() => events.close());
      const waiting = events.waitFor('storage-ready', { timeoutMs: 60_000 });
      await vm.stop();
      await t.throwsAsync(waiting, { instanceOf: GuestEventsClosed });
      t.true(events.closed);
      // Asking again after the close fails at once, with the same typed error.
      await t.throwsAsync(events.waitFor('boot-complete', { timeoutMs: 60_000 }), { instanceOf: GuestEventsClosed });
    },
    { unsafeCleanup: true },
  );
});
