// `lazyboot run` where it must fail cleanly: no command given, and a guest whose agent never
// answers (the tiny image has no qemu-guest-agent) — a one-line timeout, exit 1, nothing left.
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { STAY_UP_FW_CFG_NAME } from '../guest/qemu-args.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

test('`lazyboot run` without a command is a usage error', async (t) => {
  const result = await execa('node', [CLI, 'run', 'tiny'], { reject: false });
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /^lazyboot: no command to run: put it after --/m);
});

test('an agent that never answers ends in a one-line timeout, exit 1, and a full teardown', async (t) => {
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
    [CLI, 'run', 'tiny', '--from', repoDir, '--memory', '256M', '--timeout', '12s', '--qemu-arg=-fw_cfg', `--qemu-arg=name=${STAY_UP_FW_CFG_NAME},string=1`, '--', '/bin/true'],
    { env: { TMPDIR: tmp }, reject: false },
  );
  t.log(`${Date.now() - started} ms: ${result.stderr}`);
  t.is(result.exitCode, 1);
  const last = result.stderr.trim().split('\n').pop()!;
  t.regex(last, /^lazyboot: .*(guest agent .* did not answer|did not reach running within 12 s)/);
  t.true(Date.now() - started < 60_000);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
