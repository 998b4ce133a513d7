// `lazyboot boot … --snapshot-on-exit NAME` (with `--replicate-to` on the same run) on the real tiny
// guest: it boots lazily, writes its boot counter, powers off; the disk is shipped as NAME@1, whose
// exported root file system holds the new counter. And the bad inputs, refused before any boot.
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { CLI, importImage, scratchDir } from './boot-support.js';
import { extractPartition, fsckReadOnly, readGuestFile } from './helpers/guest-filesystem.js';
import { oneLine } from './helpers/repo-cli.js';
import { startServing } from './helpers/served-process.js';

test('boot tiny --replicate-to … --snapshot-on-exit keeps what the guest wrote as a new version, its file system clean', async (t) => {
  t.timeout(300_000);
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, tiny.path, 'tiny');
  const writeSocket = path.join(scratch, 'w.sock');
  const server = await startServing(['repo', 'serve', '--repo', repoDir, '--socket', path.join(scratch, 'r.sock'), '--write-socket', writeSocket]);
  t.teardown(() => server.stop());
  // A temporary disk: the snapshot is taken before it is deleted, to the target replicated to.
  const to = `http+unix:///?socket=${writeSocket}`;
  const booted = await execa('node', [CLI, 'boot', 'tiny', '--from', repoDir, '--pivot', 'none', '--accel', 'tcg', '--timeout', '240s',
    '--replicate-to', to, '--replicate-interval', '200ms', '--snapshot-on-exit', 'tiny-kept', '--snapshot-to', to], { reject: false, env: { TMPDIR: scratch } });
  t.is(booted.exitCode, 0, booted.stderr);
  t.regex(booted.stdout, /snapshot on exit: tiny-kept@1 from tiny@1 at /);
  t.regex(booted.stdout, /\(temporary disk: deleted\)/);
  t.regex(booted.stderr, /target origin is .*\/w\.sock/, 'the replicator bound the served repository (it holds tiny@1)');
  t.regex(booted.stderr, /replicate origin .* pass \d+: \d+ blocks checked, [1-9]\d* sent/, 'the guest\'s writes were uploaded while it ran');
  t.notRegex(booted.stderr, /new target/, 'the snapshot used the replicated target\'s marks');
  const exported = path.join(scratch, 'kept.raw');
  await execa('node', [CLI, 'image', 'export', 'tiny-kept@1', exported, '--repo', repoDir]);
  const root = path.join(scratch, 'root.ext4');
  await extractPartition(exported, 2, root);
  t.is((await readGuestFile(root, '/var/lib/lazyboot/boot-count')).trim(), '1', 'the guest\'s first boot is counted in the kept version');
  const fsck = await fsckReadOnly(root);
  t.true(fsck.clean, fsck.output);
  // The parent is unchanged.
  const parent = path.join(scratch, 'parent.raw');
  await execa('node', [CLI, 'image', 'export', 'tiny@1', parent, '--repo', repoDir]);
  await execa('cmp', [parent, tiny.path]);
});

test('boot and run refuse bad --snapshot-on-exit and --replicate-* input in one line, before any boot', async (t) => {
  t.timeout(120_000);
  const scratch = await scratchDir(t);
  const cases: Array<[string[], RegExp]> = [
    [['boot', 'tiny', '--snapshot-on-exit', 'bad name!'], /image name/i],
    [['boot', 'tiny', '--from', 'nbd+unix:///?socket=/tmp/x.sock', '--snapshot-on-exit', 'kept'], /takes no writes: give --snapshot-to/],
    [['boot', 'tiny', '--replicate-rate', '5M'], /need --replicate-to/],
    [['boot', 'tiny', '--replicate-to', scratch, '--replicate-interval', '1ms'], /too short/],
    [['boot', 'tiny', '--replicate-to', 'ftp://host/x'], /cannot write to "ftp:/],
    [['run', 'tiny', '--snapshot-on-exit', 'kept', '--snapshot-to', 'ftp://host/x', '--', 'true'], /cannot write to "ftp:/],
  ];
  for (const [args, message] of cases) {
    const result = await execa('node', [CLI, ...args], { reject: false, env: { TMPDIR: scratch } });
    t.not(result.exitCode, 0, args.join(' '));
    t.true(oneLine(result.stderr), `${args.join(' ')}: ${result.stderr}`);
    t.regex(result.stderr, message, args.join(' '));
    t.notRegex(result.stderr, /qemu-up|fetched/, 'nothing booted');
  }
});
