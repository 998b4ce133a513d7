// The guest agent client gives up in time, with a typed error and nothing left open, when no
// agent answers: a socket nobody serves, a socket that never appears, an image without an agent.
// Outcomes and order, not wall-clock windows: a loaded machine only delays a timer, so an upper
// bound on elapsed time proves nothing but flakes; that the error is the timeout's own (naming the
// configured time) or the abort's shows which path ended the wait. The only time bounds kept are
// lower ones ("did not give up early"), which load cannot break: timers never fire early.
import test from 'ava';
import { createServer, type Socket } from 'node:net';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { ensureFixture } from '../fixtures/build.js';
import { GuestAgent, waitForAgent } from '../guest/agent-client.js';
import { AgentTimeout } from '../guest/errors.js';
import { GuestEvents } from '../guest/events.js';
import { tinyStayUpArgs } from '../guest/qemu-args.js';
import { startQemuDirect } from './helpers/qemu-direct.js';
import { processAlive } from '../lib/base/process-alive.js';

test('a socket that accepts but never answers ends in AgentTimeout once its timeout has run out, and the client closes it', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const socketPath = join(dir, 'silent.sock');
      const accepted: Socket[] = [];
      const clientGone: Promise<void>[] = [];
      const server = createServer((socket) => {
        accepted.push(socket);
        clientGone.push(new Promise((resolve) => socket.on('close', () => resolve())));
        socket.resume();
      });
      await new Promise<void>((resolve) => server.listen(socketPath, resolve));
      t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));

      const started = Date.now();
      const error = await t.throwsAsync(GuestAgent.connect(socketPath, { timeoutMs: 2500 }), { instanceOf: AgentTimeout });
      const elapsed = Date.now() - started;
      t.true(elapsed >= 2500, `gave up after ${elapsed} ms, before its 2500 ms`);
      t.is(error?.command, 'guest-sync-delimited');
      t.regex(error?.toLine() ?? '', /did not answer guest-sync-delimited within 2500 ms: check that qemu-guest-agent runs/);
      // The client hung up: the server sees its side closed.
      t.is(accepted.length, 1);
      await Promise.all(clientGone);
    },
    { unsafeCleanup: true },
  );
});

test('a socket path that never appears ends in AgentTimeout when its timeout runs out', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const started = Date.now();
      const error = await t.throwsAsync(waitForAgent(join(dir, 'absent.sock'), { timeoutMs: 1500 }), { instanceOf: AgentTimeout });
      t.regex(error?.message ?? '', /within 1500 ms/);
      const elapsed = Date.now() - started;
      // It retries every 50 ms and stops when the next retry would pass the deadline: at most 50 ms early.
      t.true(elapsed >= 1450, `gave up after ${elapsed} ms, well before its 1500 ms`);
    },
    { unsafeCleanup: true },
  );
});

test('waitForAgent ends by its AbortSignal, not by its own timeout', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const socketPath = join(dir, 'silent.sock');
      const server = createServer((socket) => socket.resume());
      await new Promise<void>((resolve) => server.listen(socketPath, resolve));
      t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
      // The abort reason (a DOMException, which ava's throwsAsync does not take) is what rejects: its
      // own 60 s timeout would have been an AgentTimeout, so this shows the abort ended the wait.
      const outcome: unknown = await waitForAgent(socketPath, { timeoutMs: 60_000, signal: AbortSignal.timeout(500) }).then(
        (agent) => agent.close(),
        (error: unknown) => error,
      );
      t.is((outcome as DOMException | undefined)?.name, 'TimeoutError');
    },
    { unsafeCleanup: true },
  );
});

test('an image without a guest agent (tiny, kept up) ends in AgentTimeout, and no QEMU is left behind', async (t) => {
  await withDir(
    async ({ path: dir }) => {
      const disk = join(dir, 'tiny.raw');
      await copyFile((await ensureFixture('tiny')).path, disk);
      const vm = startQemuDirect({ disk, dir, qemuArgs: tinyStayUpArgs() });
      t.teardown(() => vm.stop());
      const events = await GuestEvents.connect(vm.eventsSocket);
      t.teardown(() => events.close());
      // The guest is fully up, its agent port attached: only the agent itself is missing.
      await events.waitFor('boot-complete', { timeoutMs: 60_000 });
      const error = await t.throwsAsync(waitForAgent(vm.agentSocket, { timeoutMs: 3000 }), { instanceOf: AgentTimeout });
      t.regex(error?.message ?? '', /within 3000 ms/);
      await vm.stop();
      t.true(vm.pid !== undefined && !processAlive(vm.pid), 'QEMU still running after stop()');
    },
    { unsafeCleanup: true },
  );
});
