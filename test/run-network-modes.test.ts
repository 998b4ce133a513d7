// `lazyboot run --net none|restrict|user` in booted guests (debian-plain, three runs side by side):
// none gives the guest no interface but lo; restrict gives it a NIC that cannot reach the host
// (slirp's gateway 10.0.2.2 is the host's loopback); user reaches a server on the host's loopback
// through that gateway.
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

/** A server on 127.0.0.1 that greets every client and counts them. */
async function greetingServer(): Promise<{ server: Server; port: number; clients: () => number }> {
  let clients = 0;
  const server = createServer((socket) => {
    clients++;
    socket.end('hello-from-the-host\n');
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port, clients: () => clients };
}

test.serial('--net none: only lo in the guest; restrict: a NIC that cannot reach the host; user: reaches the host through 10.0.2.2', async (t) => {
  t.timeout(20 * 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, plain.path, 'plain');
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const host = await greetingServer();
  t.teardown(() => new Promise<void>((resolve) => host.server.close(() => resolve())));
  // Interfaces on one line, then what a connection to the host's server through the gateway gave.
  const probe = `echo $(ls /sys/class/net); if timeout 20 busybox nc 10.0.2.2 ${host.port} </dev/null; then echo nc-exit-0; else echo nc-failed; fi`;
  const run = (mode: string) =>
    execa('node', [CLI, 'run', 'plain', '--from', repoDir, '--memory', '512M', '--boot-timeout', '15m', '--timeout', '3m', '--net', mode, '--', 'sh', '-c', probe], { env: { TMPDIR: tmp }, reject: false });
  const [none, restrict, user] = await Promise.all([run('none'), run('restrict'), run('user')]);
  for (const [mode, result] of Object.entries({ none, restrict, user })) t.log(`--net ${mode}: exit ${result.exitCode}\n${result.stdout}\n${result.stderr}`);

  t.is(none.exitCode, 0, none.stderr);
  const [noneInterfaces, ...noneRest] = none.stdout.trim().split('\n');
  t.is(noneInterfaces, 'lo', 'no interface but lo');
  t.deepEqual(noneRest, ['nc-failed']);
  t.notRegex(none.stderr, /network \(/, 'no network set up through the agent');

  t.is(restrict.exitCode, 0, restrict.stderr);
  const [restrictInterfaces, ...restrictRest] = restrict.stdout.trim().split('\n');
  t.not(restrictInterfaces!.split(' ').filter((name) => name !== 'lo').length, 0, 'a NIC');
  t.deepEqual(restrictRest, ['nc-failed'], 'the host is out of reach');

  t.is(user.exitCode, 0, user.stderr);
  t.deepEqual(user.stdout.trim().split('\n').slice(1), ['hello-from-the-host', 'nc-exit-0']);
  t.is(host.clients(), 1, 'only the user-mode guest reached the host');
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
