// A live snapshot of a running Debian guest (debian-plain: stock qemu-guest-agent, no lazyboot
// hooks): the guest writes files and keeps rewriting another while it is snapshotted twice, once
// through the API (vm.snapshot) and once with `lazyboot snapshot NAME --as` through the VM's control
// socket. Its file systems are frozen for the instant only; each new version's root file system
// checks clean (e2fsck -fn) and holds the files as they were. One VM for the whole file.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { openVmControl } from '../lib/control/vm-control.js';
import { snapshot } from '../lib/snapshot/snapshot.js';
import { SnapshotInterrupted } from '../lib/snapshot/errors.js';
import { CLI, importImage, scratchDir } from './boot-support.js';
import { filesInVersion, inGuest } from './helpers/snapshot-versions.js';
import { startServing } from './helpers/served-process.js';
import { oneLine } from './helpers/repo-cli.js';

const BOOT_TIMEOUT_MS = 300_000;

test('a running debian-plain guest is snapshotted live (API and `lazyboot snapshot NAME`): frozen for the instant, each version checks clean with the files present', async (t) => {
  t.timeout(3 * BOOT_TIMEOUT_MS);
  const image = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, image.path, 'img');
  const writeSocket = path.join(scratch, 'w.sock');
  const server = await startServing(['repo', 'serve', '--repo', repoDir, '--socket', path.join(scratch, 'r.sock'), '--write-socket', writeSocket]);
  t.teardown(() => server.stop());
  const to = `http+unix:///?socket=${writeSocket}`;
  const runtime = path.join(scratch, 'runtime');
  await mkdir(runtime, { mode: 0o700 });
  const lines: string[] = [];
  await using vm = await launch({
    image: 'img', from: [repoDir], disk: path.join(scratch, 'disk.raw'), agent: true, pivot: 'none', memoryMiB: 512,
    timeoutMs: BOOT_TIMEOUT_MS, log: (line) => lines.push(line),
  });
  const control = await openVmControl({ name: 'snap-vm', image: 'img', dir: path.join(runtime, 'lazyboot', 'vms') });
  control.attach(vm);
  t.teardown(() => control.close());
  await vm.ready;

  // Files written and synced, and a writer that keeps rewriting another file meanwhile.
  const files = ['/srv/snap/a', '/srv/snap/b'];
  const sums = (await inGuest(vm, 'mkdir -p /srv/snap && head -c 3145728 /dev/urandom > /srv/snap/a && head -c 65536 /dev/urandom > /srv/snap/b && sync && sha256sum /srv/snap/a /srv/snap/b'))
    .trim().split('\n').map((line) => line.split(' ')[0]!);
  await inGuest(vm, 'nohup sh -c "while :; do head -c 1048576 /dev/urandom > /var/tmp/churn; sync; done" >/dev/null 2>&1 &');

  const first = await vm.snapshot({ as: 'img-live', to });
  t.is(first.ref, 'img-live@1');
  t.is(first.parent, 'img@1');
  t.is(first.consistency, 'frozen');
  t.true(first.frozenFilesystems >= 1, `froze ${first.frozenFilesystems} file systems`);
  t.true(first.frozenMs > 0);
  t.true(first.sentBlocks > 0 && first.blockBytesSent <= first.dirtyBlocks * first.blockSize);
  t.log(`API: ${first.dirtyBlocks} dirty blocks, ${first.sentBlocks} sent; froze ${first.frozenFilesystems} fs for ${first.frozenMs.toFixed(1)} ms (freeze call ${first.freezeMs.toFixed(0)} ms, writes held ${first.writesHeldMs.toFixed(1)} ms); ${first.copiedBeforeWrite} blocks copied before write; ${first.seconds.toFixed(1)} s`);

  // The same through the control socket, as a user would; then bad input, each in one line.
  const env = { XDG_RUNTIME_DIR: runtime, TMPDIR: scratch };
  const cli = await execa('node', [CLI, 'snapshot', 'snap-vm', '--as', 'img-live', '--to', to, '--json'], { reject: false, env });
  t.is(cli.exitCode, 0, cli.stderr);
  const second = JSON.parse(cli.stdout);
  t.is(second.ref, 'img-live@2');
  t.is(second.parent, 'img-live@1');
  t.is(second.consistency, 'frozen');
  t.log(`CLI: ${second.dirtyBlocks} dirty blocks, ${second.sentBlocks} sent; frozen ${second.frozenMs.toFixed(1)} ms; ${second.copiedBeforeWrite} blocks copied before write`);
  const human = await execa('node', [CLI, 'snapshot', 'snap-vm', '--as', 'img-live', '--to', to, '--no-freeze'], { reject: false, env });
  t.is(human.exitCode, 0, human.stderr);
  t.regex(human.stdout, /img-live@3 from img-live@2 .*\n[^]*instant: crash-consistent/);
  for (const [args, message] of [
    [['snapshot', 'no-such-vm', '--as', 'x'], /no running VM is named no-such-vm/],
    [['snapshot', 'snap-vm', '--as', 'bad name!', '--to', to], /image name/i],
    [['snapshot', 'snap-vm', '--disk', path.join(scratch, 'disk.raw'), '--as', 'x'], /not both/],
    [['snapshot', '--as', 'x'], /needs a running VM's NAME or --disk/],
    [['snapshot', '--disk', path.join(scratch, 'disk.raw'), '--as', 'x'], /needs --to/],
  ] as const) {
    const result = await execa('node', [CLI, ...args], { reject: false, env });
    t.not(result.exitCode, 0, args.join(' '));
    t.true(oneLine(result.stderr), result.stderr);
    t.regex(result.stderr, message);
  }
  t.is((await vm.exec('/bin/true')).exitCode, 0, 'the guest runs on, thawed');

  // Closing the VM while a snapshot is under way stops it at its next batch: no version, every mark
  // back in the map, so the next snapshot (of the disk, now at rest) ships them.
  let closing: Promise<void> | undefined;
  let fixed = 0;
  const interrupted = vm.snapshot({
    as: 'img-live', to, batchBytes: 65536,
    onProgress: (progress) => {
      fixed = progress.dirtyBlocks;
      closing ??= vm.close();
      return new Promise((resolve) => setTimeout(resolve, 1000));
    },
  });
  await t.throwsAsync(interrupted, { instanceOf: SnapshotInterrupted });
  await closing;
  const atRest = await snapshot({ disk: path.join(scratch, 'disk.raw'), to, as: 'img-live' });
  t.is(atRest.ref, 'img-live@4', 'the interrupted snapshot committed nothing');
  t.true(atRest.dirtyBlocks >= fixed && fixed > 0, `${atRest.dirtyBlocks} marked blocks shipped at rest, ${fixed} in the interrupted snapshot`);

  for (const ref of ['img-live@1', 'img-live@2']) {
    const inVersion = await filesInVersion(t, scratch, repoDir, ref, files);
    t.deepEqual(files.map((file) => inVersion[file]), sums, `${ref}: the files are present and whole`);
  }
  t.notRegex(lines.join('\n'), /EXT4-fs error|I\/O error/);
});
