// `lazyboot run` where lazyboot itself fails: one line and exit 125 (docker run's code for "the
// runner failed", so a guest command's own 1 or 2 is never confused with it) — bad arguments and an
// unknown image before anything boots, and a guest whose agent never answers (the tiny image has no
// qemu-guest-agent): a one-line timeout and nothing left behind.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { STAY_UP_FW_CFG_NAME } from '../guest/qemu-args.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

test('`lazyboot run` without a command is a usage error, exit 125', async (t) => {
  const result = await execa('node', [CLI, 'run', 'tiny'], { reject: false });
  t.is(result.exitCode, 125);
  t.regex(result.stderr, /^lazyboot: no command to run: put it after --/m);
});

test('bad run arguments are refused before anything boots: one line each, exit 125', async (t) => {
  const scratch = await scratchDir(t);
  const cases: [string[], RegExp][] = [
    [['--bogus-flag'], /Unknown arguments?: bogus-flag/],
    [['--copy-in', 'missing.txt:/tmp/x'], /--copy-in: missing.txt is not a file on the host: give an existing file/],
    [['--copy-in', `${scratch}`], /--copy-in ".*" is not HOST:GUEST: write e.g. --copy-in/],
    [['--copy-in', `${CLI}:relative/x`], /the guest path relative\/x is not absolute/],
    [['--copy-out', `/tmp/x:${scratch}/no/such/dir/x`], /--copy-out: the host directory .*no\/such\/dir does not exist/],
    [['--timeout', 'soon'], /invalid duration "soon"/],
    [['--forward', '99999'], /--forward 99999: 99999 is not a port/],
    [['--forward', '80:81:82'], /--forward 80:81:82 is not HOST_PORT:GUEST_PORT/],
    [['--net', 'none', '--forward', '80'], /--forward needs a network: drop --net none/],
    [['--hostname', 'bad_name!'], /--hostname "bad_name!" is not a host name/],
    [['--ssh-key', `${scratch}/missing.pub`], /--ssh-key .*missing.pub: no such file/],
    [['--ssh-key', CLI], /--ssh-key .* is not one OpenSSH public key line: give the .pub file/],
    [['--json', '--json-fd', '9'], /--json-fd 9 is not open: open it in the shell/],
    [['--share', 'no-such-dir:/src'], /--share: no-such-dir is not a directory on the host: give an existing directory/],
    [['--share', `${scratch}:relative`], /--share ".*": the guest directory relative is not an absolute path below \//],
    [['--share', `${scratch}:/src:rw`], /--share ".*" is not HOST_DIR:GUEST_DIR\[:ro\]: write e.g./],
    [['--user-data', `${scratch}/missing.yaml`], /--user-data .*missing.yaml: no such file/],
    [['--user-data', scratch], /--user-data .* is not a file/],
    [['--user-data', path.join(scratch, 'not-user-data.yaml')], /--user-data .*not-user-data.yaml is not cloud-init user data \(it starts with "hostname: x"\): start it with #cloud-config/],
  ];
  await writeFile(path.join(scratch, 'not-user-data.yaml'), 'hostname: x\n');
  for (const [flags, message] of cases) {
    const result = await execa('node', [CLI, 'run', 'tiny', '--from', scratch, ...flags, '--', 'true'], { reject: false, env: { TMPDIR: scratch } });
    t.is(result.exitCode, 125, flags.join(' '));
    t.regex(result.stderr, message, flags.join(' '));
  }
  t.deepEqual(await leftovers(scratch), []);
});

test('an unknown image: one line naming it, exit 125, nothing booted', async (t) => {
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, tiny.path, 'tiny');
  const result = await execa('node', [CLI, 'run', 'no-such-image', '--from', repoDir, '--', 'true'], { reject: false, env: { TMPDIR: scratch } });
  t.is(result.exitCode, 125);
  t.regex(result.stderr, /^lazyboot: .*no-such-image/m);
  t.is(result.stderr.trim().split('\n').length, 1, result.stderr);
  t.deepEqual(await leftovers(scratch), []);
});

test('an agent that never answers ends in a one-line timeout, exit 125, and a full teardown', async (t) => {
  t.timeout(120_000);
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, tiny.path, 'tiny');
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const started = Date.now();
  // The tiny guest stays up (fw_cfg) but carries no qemu-guest-agent.
  const result = await execa(
    'node',
    [CLI, 'run', 'tiny', '--from', repoDir, '--memory', '256M', '--boot-timeout', '12s', '--qemu-arg=-fw_cfg', `--qemu-arg=name=${STAY_UP_FW_CFG_NAME},string=1`, '--', '/bin/true'],
    { env: { TMPDIR: tmp }, reject: false },
  );
  t.log(`${Date.now() - started} ms: ${result.stderr}`);
  t.is(result.exitCode, 125);
  const last = result.stderr.trim().split('\n').pop()!;
  t.regex(last, /^lazyboot: .*(guest agent .* did not answer|did not reach running within 12 s)/);
  t.true(Date.now() - started < 60_000);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
