// `lazyboot run --share HOST_DIR:GUEST_DIR[:ro]` on the stock debian-plain image (Debian's cloud
// kernel: virtiofs as a module, no 9p): a directory the guest writes and the host reads, files
// owned by the directory's owner on the host (never host root, though the guest runs as root),
// no device nodes; `:ro` refused in the guest even after the guest remounts it read-write (the
// host enforces it). A guest kernel without virtiofs gets one line saying so.
import { mkdir, readdir, readFile, stat, writeFile, chmod, chown } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { mountShares } from '../lib/cli/run-share.js';
import type { LazyVm } from '../lib/launch.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

/** The directory's owner on the host: an ordinary user, as a CI checkout would be. */
const OWNER = 65534;

test.serial('debian-plain: --share rw is written by the guest and read by the host as the owner; :ro refuses guest writes', async (t) => {
  t.timeout(20 * 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, plain.path, 'plain');
  const tmp = path.join(scratch, 'tmp');
  const rw = path.join(scratch, 'out');
  const ro = path.join(scratch, 'in');
  await mkdir(tmp);
  await mkdir(rw);
  await mkdir(ro);
  await writeFile(path.join(ro, 'input.txt'), 'from-the-host\n');
  await chown(rw, OWNER, OWNER);
  await chmod(scratch, 0o711); // the owner must reach its directory
  const command = [
    'cat /in/input.txt',
    'echo from-the-guest > /out/result.txt && mkdir /out/sub && echo deep > /out/sub/deep.txt && echo wrote',
    'chown 0:0 /out/result.txt; chmod 4755 /out/result.txt',
    'mknod /out/null c 1 3 2>/dev/null && echo mknod-allowed || echo mknod-refused',
    'touch /in/x 2>/dev/null && echo ro-written || echo ro-refused',
    'mount -o remount,rw /in; touch /in/y 2>/dev/null && echo ro-written-after-remount || echo ro-refused-after-remount',
  ].join('; ');
  const run = await execa('node', [CLI, 'run', 'plain', '--from', repoDir, '--memory', '512M', '--boot-timeout', '15m', '--timeout', '3m', '--net', 'none', '--share', `${rw}:/out`, '--share', `${ro}:/in:ro`, '--', 'sh', '-c', command], {
    env: { TMPDIR: tmp },
    reject: false,
  });
  t.log(run.stderr);
  t.is(run.exitCode, 0, run.stderr);
  t.regex(run.stderr, /shared .*out on \/out \(virtiofs\)/);
  t.regex(run.stderr, /shared .*in on \/in \(virtiofs, read-only\)/);
  t.deepEqual(run.stdout.trim().split('\n'), ['from-the-host', 'wrote', 'mknod-refused', 'ro-refused', 'ro-refused-after-remount']);
  t.is(await readFile(path.join(rw, 'result.txt'), 'utf8'), 'from-the-guest\n');
  t.is(await readFile(path.join(rw, 'sub', 'deep.txt'), 'utf8'), 'deep\n');
  const result = await stat(path.join(rw, 'result.txt'));
  t.is(result.uid, OWNER, 'the guest root writes as the directory owner, not host root');
  t.is((await stat(path.join(rw, 'sub'))).uid, OWNER);
  t.false((result.mode & 0o4000) !== 0 && result.uid === 0, 'no setuid-root file on the host');
  t.deepEqual((await readdir(rw)).sort(), ['result.txt', 'sub']);
  t.deepEqual(await readdir(ro), ['input.txt']);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
  const { stdout: daemons } = await execa('pgrep', ['-f', `virtiofsd.*${tmp}`], { reject: false });
  t.is(daemons.trim(), '', 'no virtiofsd left');
});

test('a guest kernel without virtiofs: one line saying it has neither virtiofs nor 9p', async (t) => {
  // The guest side of this answer is guest/share-script.ts (exit 2, `no-virtiofs`); our fixtures'
  // kernels all have virtiofs, so the guest's answer is given here.
  const guestWithout = (said: string) => ({ exec: async () => ({ exitCode: 2, stdout: `${said}\n`, stderr: '' }) }) as unknown as LazyVm;
  const share = { hostDir: '/srv/src', guestDir: '/src', readOnly: false };
  await t.throwsAsync(mountShares(guestWithout('no-virtiofs '), [share]), {
    message: '--share: the guest kernel has no virtiofs and no 9p: it cannot mount /srv/src',
  });
  await t.throwsAsync(mountShares(guestWithout('no-virtiofs 9p'), [share]), { message: /has no virtiofs \(it has 9p, which lazyboot does not offer\)/ });
});
