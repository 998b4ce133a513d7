// An image as users bring them (debian-plain: no lazyboot hooks, stock initramfs and
// qemu-guest-agent) through `lazyboot run`: the command runs through the agent alone, its exit
// code passes through.
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { CLI, importImage, scratchDir, serveRepository } from './boot-support.js';

test.serial('debian-plain (no hooks): `run -- cat /etc/hostname` works through the stock guest agent', async (t) => {
  t.timeout(8 * 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, plain.path, 'plain');
  const served = await serveRepository(t, repoDir);
  const run = await execa('node', [CLI, 'run', 'plain', '--from', served.uri, '--disk', path.join(scratch, 'plain.raw'), '--memory', '512M', '--boot-timeout', '300s', '--', 'cat', '/etc/hostname'], { reject: false });
  t.log(run.stderr);
  t.is(run.exitCode, 0, run.stderr);
  t.is(run.stdout.trim(), 'lazyboot-debian-plain');
});
