// `lazyboot run --user-data` on an image without cloud-init (debian-plain): refused in one line
// (125) once the agent answers, instead of going on with a seed nobody reads.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

test.serial('debian-plain (no cloud-init): --user-data is refused in one line, exit 125, nothing left behind', async (t) => {
  t.timeout(20 * 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, plain.path, 'plain');
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  await writeFile(path.join(scratch, 'user-data.yaml'), '#cloud-config\nruncmd: [touch /root/ran]\n');
  const run = await execa('node', [CLI, 'run', 'plain', '--from', repoDir, '--memory', '512M', '--boot-timeout', '15m', '--net', 'none', '--user-data', path.join(scratch, 'user-data.yaml'), '--', 'true'], {
    env: { TMPDIR: tmp },
    reject: false,
  });
  t.log(run.stderr);
  t.is(run.exitCode, 125);
  t.regex(run.stderr, /^lazyboot: --user-data: the guest has no cloud-init: use an image that runs cloud-init/m);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
