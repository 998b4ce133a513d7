// `lazyboot run` with the network and per-target settings on the stock debian-plain image (no
// cloud-init, no DHCP client): --forward GUEST_PORT picks a free host port and prints it, the
// guest's NIC is brought up through the agent, a server in the guest answers through the forward;
// --hostname and --ssh-key are applied through the agent before the command runs.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';
import { readAll } from './helpers/tcp-read.js';

test.serial('debian-plain: --forward reaches a server in the guest; --hostname and --ssh-key applied through the agent', async (t) => {
  t.timeout(15 * 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, plain.path, 'plain');
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0123456789abcdefghijklmn ci@lazyboot';
  await writeFile(path.join(scratch, 'id.pub'), `${key}\n`);
  // The command reports the settings, then serves one line on port 8080 and ends after one client.
  const command = [
    'hostname',
    'cat /etc/hostname',
    'cat /root/.ssh/authorized_keys',
    'stat -c %a /root/.ssh /root/.ssh/authorized_keys',
    'echo serving',
    'echo hello-through-the-forward | busybox nc -l -p 8080',
  ].join('; ');
  const run = execa('node', [CLI, 'run', 'plain', '--from', repoDir, '--memory', '512M', '--boot-timeout', '12m', '--timeout', '5m', '--forward', '8080', '--hostname', 'ci-runner-7', '--ssh-key', path.join(scratch, 'id.pub'), '--', 'sh', '-c', command], {
    env: { TMPDIR: tmp },
    reject: false,
  });
  let stderr = '';
  let stdout = '';
  const hostPort = new Promise<number>((resolve) => {
    run.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const match = /forwarding 127\.0\.0\.1:(\d+) to guest port 8080/.exec(stderr);
      if (match) resolve(Number(match[1]));
    });
  });
  const serving = new Promise<void>((resolve) => {
    run.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes('serving\n')) resolve();
    });
  });
  const port = await Promise.race([hostPort, run.then(() => 0)]);
  t.true(port > 0, stderr);
  await Promise.race([serving, run]);
  // The guest's nc may need a moment after "serving": slirp accepts and resets until it listens.
  let answer = '';
  for (let attempt = 0; attempt < 60 && !answer; attempt++) {
    answer = await readAll(port);
    if (!answer) await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const result = await run;
  t.log(stderr);
  t.is(answer.trim(), 'hello-through-the-forward');
  t.is(result.exitCode, 0, stderr);
  const lines = stdout.trim().split('\n');
  t.is(lines[0], 'ci-runner-7', 'the running hostname');
  t.is(lines[1], 'ci-runner-7', '/etc/hostname');
  t.is(lines[2], key, 'the key is authorized for root');
  t.is(lines[3], '700', '~/.ssh is 700');
  t.is(lines[4], '600', 'authorized_keys is 600');
  t.regex(stderr, /network \(user\): configured \w+ as 10\.0\.2\.15\/24 through the agent|network \(user\): configured by the guest itself/);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
