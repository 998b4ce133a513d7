// `lazyboot run --user-data` on the image that runs cloud-init (debian-cloud: NoCloud only): the
// seed disk is read, the user-data's file is there when the command runs, --hostname (seed
// meta-data and agent) and --ssh-key (agent, after cloud-init) hold on the cloud-init image too.
// An image without cloud-init (debian-plain) refuses --user-data in one line instead of ignoring it.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

const USER_DATA = `#cloud-config
write_files:
  - path: /root/from-user-data.txt
    content: |
      written by cloud-init from the seed
`;

test.serial('debian-cloud: --user-data writes a file seen by the command, --hostname and --ssh-key hold; debian-plain refuses --user-data', async (t) => {
  t.timeout(25 * 60_000);
  const [cloud, plain] = await Promise.all([ensureFixture('debian-cloud'), ensureFixture('debian-plain')]);
  const scratch = await scratchDir(t);
  const cloudRepo = await importImage(path.join(scratch, 'cloud'), cloud.path, 'cloud');
  const plainRepo = await importImage(path.join(scratch, 'plain'), plain.path, 'plain');
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0123456789abcdefghijklmn ci@lazyboot';
  await writeFile(path.join(scratch, 'id.pub'), `${key}\n`);
  await writeFile(path.join(scratch, 'user-data.yaml'), USER_DATA);
  const common = ['--memory', '512M', '--boot-timeout', '20m', '--timeout', '3m', '--net', 'none', '--user-data', path.join(scratch, 'user-data.yaml')];
  const command = 'cat /root/from-user-data.txt; hostname; cat /etc/hostname; cat /root/.ssh/authorized_keys; cloud-init status';
  const started = Date.now();
  const [cloudRun, plainRun] = await Promise.all([
    execa('node', [CLI, 'run', 'cloud', '--from', cloudRepo, ...common, '--hostname', 'ci-cloud-3', '--ssh-key', path.join(scratch, 'id.pub'), '--', 'sh', '-c', command], { env: { TMPDIR: tmp }, reject: false }),
    execa('node', [CLI, 'run', 'plain', '--from', plainRepo, ...common, '--', 'true'], { env: { TMPDIR: tmp }, reject: false }),
  ]);
  t.log(`both runs took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  t.log(cloudRun.stderr);
  t.is(cloudRun.exitCode, 0, cloudRun.stderr);
  t.regex(cloudRun.stderr, /cloud-init: done with the seed/);
  t.deepEqual(cloudRun.stdout.trim().split('\n'), ['written by cloud-init from the seed', 'ci-cloud-3', 'ci-cloud-3', key, 'status: done']);

  t.log(plainRun.stderr);
  t.is(plainRun.exitCode, 125);
  t.regex(plainRun.stderr, /^lazyboot: --user-data: the guest has no cloud-init: use an image that runs cloud-init/m);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
