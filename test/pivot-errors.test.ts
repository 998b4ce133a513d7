// A pivot that cannot happen says why in one line and exits 1, leaving nothing behind: an image
// with neither lazyboot hooks nor a guest agent (nothing can say storage-ready), and an image whose
// block size cannot be a qcow2 cluster (refused before QEMU starts).
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { makeImage } from './cor-fixtures.js';
import { CLI, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

const MiB = 1024 * 1024;

async function bootCli(tmp: string, args: string[]) {
  await execa('mkdir', ['-p', tmp]);
  return execa('node', [CLI, 'boot', ...args], { env: { TMPDIR: tmp }, reject: false });
}

test('an image with neither hooks nor a guest agent: `boot --pivot live` fails with one line naming both sources and the fix', async (t) => {
  t.timeout(180_000);
  const scratch = await scratchDir(t);
  // All zeros: the firmware finds nothing to boot, so no hook and no agent ever speaks.
  const image = await makeImage(scratch, 'blank', { size: 8 * MiB, content: Buffer.alloc(8 * MiB) });
  const tmp = path.join(scratch, 'tmp');
  const result = await bootCli(tmp, ['blank', '--from', image.repoDir, '--pivot', 'live', '--timeout', '20s', '--memory', '128M']);
  t.log(result.stderr);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /cannot pivot: after 20 s no lazyboot hook said storage-ready, and qemu-guest-agent did not report \/ on a virtio\/scsi\/nvme disk/);
  t.regex(result.stderr, /install qemu-guest-agent in the image \(or the lazyboot hooks\), or boot with --pivot none/);
  t.regex(result.stdout, /summary: blank@1 failed/);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});

test('an image of 4 MiB blocks cannot be pivoted (qcow2 clusters end at 2 MiB): refused at once, before QEMU starts', async (t) => {
  const scratch = await scratchDir(t);
  const image = await makeImage(scratch, 'wide', { size: 8 * MiB, blockSize: 4 * MiB });
  const tmp = path.join(scratch, 'tmp');
  const started = Date.now();
  const result = await bootCli(tmp, ['wide', '--from', image.repoDir, '--pivot', 'live']);
  t.log(result.stderr);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /cannot pivot an image of 4194304-byte blocks: qcow2 clusters are powers of two from 512 B to 2 MiB/);
  t.notRegex(result.stderr, /QEMU up/);
  t.true(Date.now() - started < 60_000);
  const bad = await bootCli(tmp, ['wide', '--from', image.repoDir, '--pivot', 'sideways']);
  t.not(bad.exitCode, 0);
  t.regex(bad.stderr, /pivot/);
  t.deepEqual(await leftovers(tmp), []);
});
