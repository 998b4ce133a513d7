// `lazyboot run --user-data` on the image that runs cloud-init (debian-cloud: NoCloud only), one
// boot: the seed's user-data wrote its file before the command runs, cloud-init itself set the
// --hostname (its set-hostname record) and authorized the --ssh-key for the default user (its log),
// the agent then authorized the key for root in place of cloud-init's disable_root stub, and
// cloud-init's status is done (no module failed).
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

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0123456789abcdefghijklmn ci@lazyboot';

// One section per fact, so a failure names what is missing.
const COMMAND = [
  'echo "== user-data"; cat /root/from-user-data.txt',
  'echo "== hostname"; hostname; cat /etc/hostname',
  'echo "== cloud-init set-hostname"; cat /var/lib/cloud/data/set-hostname; echo',
  'echo "== debian keys"; cat /home/debian/.ssh/authorized_keys',
  'echo "== root keys"; cat /root/.ssh/authorized_keys',
  'echo "== cloud-init wrote"; grep -o "Writing to /[a-z/]*/.ssh/authorized_keys" /var/log/cloud-init.log | sort -u',
  'echo "== status"; cloud-init status',
].join('; ');

function section(stdout: string, name: string): string {
  return stdout.split(`== ${name}\n`)[1]?.split('\n== ')[0]?.trim() ?? '(missing)';
}

test.serial('debian-cloud: --user-data, --hostname and --ssh-key applied by cloud-init; status done; nothing left behind', async (t) => {
  t.timeout(25 * 60_000);
  const cloud = await ensureFixture('debian-cloud');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, cloud.path, 'cloud');
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  await writeFile(path.join(scratch, 'id.pub'), `${KEY}\n`);
  await writeFile(path.join(scratch, 'user-data.yaml'), USER_DATA);
  const started = Date.now();
  const run = await execa('node', [CLI, 'run', 'cloud', '--from', repoDir, '--memory', '512M', '--boot-timeout', '20m', '--timeout', '3m', '--net', 'none', '--user-data', path.join(scratch, 'user-data.yaml'), '--hostname', 'ci-cloud-3', '--ssh-key', path.join(scratch, 'id.pub'), '--', 'sh', '-c', COMMAND], {
    env: { TMPDIR: tmp },
    reject: false,
  });
  t.log(`the run took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  t.log(run.stderr);
  t.is(run.exitCode, 0, run.stderr);
  t.regex(run.stderr, /cloud-init: done with the seed/);
  t.is(section(run.stdout, 'user-data'), 'written by cloud-init from the seed');
  t.is(section(run.stdout, 'hostname'), 'ci-cloud-3\nci-cloud-3');
  t.regex(section(run.stdout, 'cloud-init set-hostname'), /"hostname": "ci-cloud-3"/);
  t.is(section(run.stdout, 'debian keys'), KEY);
  // cloud-init wrote root's file too (its disable_root stub before the key), which the agent then replaced.
  t.is(section(run.stdout, 'cloud-init wrote'), 'Writing to /home/debian/.ssh/authorized_keys\nWriting to /root/.ssh/authorized_keys');
  t.is(section(run.stdout, 'root keys'), KEY);
  t.is(section(run.stdout, 'status'), 'status: done');
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
