// The QMP client and launcher against a real QEMU 7.2 that boots nothing (-machine none).
import net from 'node:net';
import path from 'node:path';
import test from 'ava';
import { dir } from 'tmp-promise';
import { launchQemu, type LaunchedQemu } from '../vmm/launcher.js';
import { QmpClient, type QmpEvent } from '../vmm/qmp.js';
import { QemuExited, QemuNotFound, QmpConnectionClosed, QmpError, QmpTimeout } from '../vmm/errors.js';

async function startBare(t: import('ava').ExecutionContext): Promise<LaunchedQemu> {
  const runDir = await dir({ unsafeCleanup: true, prefix: 'lazyboot-test-' });
  const qemu = await launchQemu({ runDir: runDir.path, accel: 'tcg', machine: 'none' });
  t.teardown(async () => {
    await qemu.process.stop(qemu.qmp, 1000);
    await qemu.qmp.close();
    await runDir.cleanup();
  });
  return qemu;
}

test('connects, negotiates capabilities and runs commands, several in flight at once', async (t) => {
  const { qmp } = await startBare(t);
  t.is(qmp.greeting.version.qemu.major >= 7, true);
  const [version, status, kvm] = await Promise.all([
    qmp.execute<{ qemu: { major: number } }>('query-version'),
    qmp.execute<{ status: string }>('query-status'),
    qmp.execute<{ present: boolean }>('query-kvm'),
  ]);
  t.is(version.qemu.major, qmp.greeting.version.qemu.major);
  t.is(typeof status.status, 'string');
  t.is(typeof kvm.present, 'boolean');
});

test('a failed command rejects with QmpError carrying QEMU class and description', async (t) => {
  const { qmp } = await startBare(t);
  const unknown = await t.throwsAsync(qmp.execute('no-such-command'), { instanceOf: QmpError });
  t.is(unknown.errorClass, 'CommandNotFound');
  t.regex(unknown.description, /no-such-command/);
  const badFile = await t.throwsAsync(qmp.execute('blockdev-add', { driver: 'file', filename: '/nonexistent/x', 'node-name': 'x' }), { instanceOf: QmpError });
  t.is(badFile.errorClass, 'GenericError');
  t.regex(badFile.description, /No such file/);
  // the connection stays usable after errors
  t.truthy(await qmp.execute('query-status'));
});

test('events arrive with their data', async (t) => {
  const { qmp, process } = await startBare(t);
  const seen: QmpEvent[] = [];
  qmp.onEvent((event) => seen.push(event));
  const stopped = qmp.waitForEvent('STOP', { timeoutMs: 5000 });
  await qmp.execute('stop');
  t.is((await stopped).event, 'STOP');
  const shutdown = qmp.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
  await qmp.execute('quit');
  const event = await shutdown;
  t.deepEqual(event.data, { guest: false, reason: 'host-qmp-quit' });
  t.is(typeof event.timestamp?.seconds, 'number');
  await process.exited;
  t.deepEqual(seen.map((e) => e.event), ['STOP', 'SHUTDOWN']);
});

test('commands on a dead QEMU reject at once instead of hanging', async (t) => {
  const { qmp, process } = await startBare(t);
  process.kill('SIGKILL');
  await process.exited;
  await t.throwsAsync(qmp.execute('query-status', undefined, { timeoutMs: 5000 }), { instanceOf: QmpConnectionClosed });
});

test('a peer that closes before the greeting, or never greets, fails fast with a typed error', async (t) => {
  const runDir = await dir({ unsafeCleanup: true, prefix: 'lazyboot-test-' });
  const closing = net.createServer((socket) => socket.destroy()).listen(path.join(runDir.path, 'closing.sock'));
  const silent = net.createServer(() => {}).listen(path.join(runDir.path, 'silent.sock'));
  t.teardown(async () => {
    closing.close();
    silent.close();
    await runDir.cleanup();
  });
  await t.throwsAsync(QmpClient.connect(path.join(runDir.path, 'closing.sock'), { timeoutMs: 2000 }), { instanceOf: QmpConnectionClosed });
  const started = Date.now();
  await t.throwsAsync(QmpClient.connect(path.join(runDir.path, 'silent.sock'), { timeoutMs: 300 }), { instanceOf: QmpTimeout });
  t.true(Date.now() - started < 2000);
});

test('a missing QEMU binary and a QEMU that dies at start are one-line typed errors', async (t) => {
  const runDir = await dir({ unsafeCleanup: true, prefix: 'lazyboot-test-' });
  t.teardown(() => runDir.cleanup());
  await t.throwsAsync(launchQemu({ runDir: runDir.path, accel: 'tcg', machine: 'none', qemuBinary: '/nonexistent/qemu-system-x86_64' }), {
    instanceOf: QemuNotFound,
  });
  const died = await t.throwsAsync(launchQemu({ runDir: runDir.path, accel: 'tcg', machine: 'none', qemuArgs: ['-no-such-option'] }), {
    instanceOf: QemuExited,
  });
  t.regex(died.message, /no-such-option/);
  t.notRegex(died.toLine(), /\n/);
});
