// `lazyboot run --net none|restrict|user` in booted guests (debian-plain, three runs side by side):
// none gives the guest no interface but lo; restrict gives it a NIC that cannot reach the host
// (slirp's gateway 10.0.2.2 is the host's loopback) while its --forward still reaches a server in
// the guest (QEMU's restrict=on keeps explicit forwards); user reaches a server on the host's
// loopback through that gateway.
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import test from 'ava';
import { execa, type ResultPromise } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';
import { readAll } from './helpers/tcp-read.js';

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

/** Once the run prints its forward and the guest says "serving", what the forward answers (retried while slirp resets). */
async function answerThroughForward(run: ResultPromise, guestPort: number): Promise<string> {
  let stderr = '';
  let stdout = '';
  const hostPort = new Promise<number>((resolve) => {
    run.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const match = new RegExp(`forwarding 127\\.0\\.0\\.1:(\\d+) to guest port ${guestPort}`).exec(stderr);
      if (match) resolve(Number(match[1]));
    });
  });
  const serving = new Promise<boolean>((resolve) => {
    run.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes('serving\n')) resolve(true);
    });
  });
  const ended = run.then(() => false, () => false);
  const port = await Promise.race([hostPort, ended.then(() => 0)]);
  if (!port || !(await Promise.race([serving, ended]))) return '';
  let answer = '';
  for (let attempt = 0; attempt < 60 && !answer; attempt++) {
    answer = await readAll(port);
    if (!answer) await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return answer;
}

test.serial('--net none: only lo in the guest; restrict: a NIC that cannot reach the host, its --forward reaches the guest; user: reaches the host through 10.0.2.2', async (t) => {
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
  // Under restrict the guest then serves one line on port 8080 through --forward, and ends after one client.
  const serve = 'echo serving; echo hello-through-the-forward | busybox nc -l -p 8080';
  const run = (mode: string, extra: string[] = [], command = probe) =>
    execa('node', [CLI, 'run', 'plain', '--from', repoDir, '--memory', '512M', '--boot-timeout', '15m', '--timeout', '5m', '--net', mode, ...extra, '--', 'sh', '-c', command], { env: { TMPDIR: tmp }, reject: false });
  const restricted = run('restrict', ['--forward', '8080'], `${probe}; ${serve}`);
  const [none, restrict, user, forwarded] = await Promise.all([run('none'), restricted, run('user'), answerThroughForward(restricted, 8080)]);
  for (const [mode, result] of Object.entries({ none, restrict, user })) t.log(`--net ${mode}: exit ${result.exitCode}\n${result.stdout}\n${result.stderr}`);

  t.is(none.exitCode, 0, none.stderr);
  const [noneInterfaces, ...noneRest] = none.stdout.trim().split('\n');
  t.is(noneInterfaces, 'lo', 'no interface but lo');
  t.deepEqual(noneRest, ['nc-failed']);
  t.notRegex(none.stderr, /network \(/, 'no network set up through the agent');

  t.is(restrict.exitCode, 0, restrict.stderr);
  const [restrictInterfaces, ...restrictRest] = restrict.stdout.trim().split('\n');
  t.not(restrictInterfaces!.split(' ').filter((name) => name !== 'lo').length, 0, 'a NIC');
  t.deepEqual(restrictRest, ['nc-failed', 'serving'], 'the host is out of reach');
  t.is(forwarded.trim(), 'hello-through-the-forward', 'the forward reaches the server in the guest');

  t.is(user.exitCode, 0, user.stderr);
  t.deepEqual(user.stdout.trim().split('\n').slice(1), ['hello-from-the-host', 'nc-exit-0']);
  t.is(host.clients(), 1, 'only the user-mode guest reached the host');
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
