// Who owns Ctrl-C. The library does not: a program that embeds launch() keeps its own SIGINT
// handling and closes the VM itself. The CLI does: `lazyboot boot` tears everything down when the
// terminal sends SIGINT to its whole process group (QEMU included, as a real Ctrl-C does).
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture, repositoryRoot } from '../fixtures/build.js';
import { STAY_UP_FW_CFG_NAME } from '../guest/qemu-args.js';
import { CLI, importImage, leftovers, processAlive, qemuProcessesMentioning, scratchDir, serveRepository, tinyWithUnreadTail, waitForLine } from './boot-support.js';

const TEST_TIMEOUT_MS = 120_000;
const EMBEDDER = path.join(repositoryRoot(), 'dist', 'test', 'helpers', 'embedded-launch.js');

/** The tiny image served; withUnreadTail: with data the boot leaves absent, so a fill has work. */
async function tinyServed(t: import('ava').ExecutionContext, { withUnreadTail = false } = {}) {
  const scratch = await scratchDir(t);
  const fixture = await ensureFixture('tiny');
  const tiny = withUnreadTail ? await tinyWithUnreadTail(scratch, fixture.path) : fixture;
  const served = await serveRepository(t, await importImage(scratch, tiny.path, 'tiny'));
  const tmp = path.join(scratch, 'tmp');
  await mkdir(tmp);
  return { served, tmp };
}

test('a program embedding launch() keeps its own SIGINT handler: it runs, closes the VM itself, and no QEMU is left', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const { served, tmp } = await tinyServed(t);
  // Its own process group, signalled as a whole: what a terminal's Ctrl-C does.
  const embedder = execa('node', [EMBEDDER, served.uri], { env: { TMPDIR: tmp }, reject: false, detached: true });
  t.teardown(() => void embedder.kill('SIGKILL'));
  const qemuPid = Number((await waitForLine(embedder, 'stdout', /^up (\d+)$/m))[1]);
  t.true(processAlive(qemuPid));
  process.kill(-embedder.pid!, 'SIGINT');
  const result = await embedder;
  t.log(result.stdout, result.stderr);
  t.regex(result.stdout, /^embedder: SIGINT$/m, "the embedder's handler ran");
  t.regex(result.stdout, /^embedder: closed stopped$/m, 'it closed the VM itself: a stop it asked for, not a failure');
  // The library took no part: no teardown message of its own, no exit with 130, and the process
  // ended by itself once the VM was closed (nothing left open).
  t.notRegex(result.stderr, /tearing down/);
  t.is(result.exitCode, 0);
  t.false(processAlive(qemuPid));
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
  t.deepEqual(await leftovers(tmp), []);
});

test('`lazyboot boot`: Ctrl-C to the whole process group mid-boot tears everything down, exit 130, nothing left', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const { served, tmp } = await tinyServed(t);
  // Kept up after boot-complete, so the guest cannot power off by itself before the signal lands.
  const stayUp = ['--qemu-arg=-fw_cfg', `--qemu-arg=name=${STAY_UP_FW_CFG_NAME},string=1`];
  const child = execa('node', [CLI, 'boot', 'tiny', '--from', served.uri, '--memory', '256M', ...stayUp], { env: { TMPDIR: tmp }, reject: false, detached: true });
  t.teardown(() => void child.kill('SIGKILL'));
  const qemuPid = Number((await waitForLine(child, 'stderr', /QEMU up \(pid (\d+)\)/))[1]);
  // Mid-boot: the guest's own driver has the disk and reads through the COR device.
  await waitForLine(child, 'stderr', /storage-ready at/);
  process.kill(-child.pid!, 'SIGINT');
  const result = await child;
  t.log(result.stderr);
  t.log(result.stdout);
  t.is(result.exitCode, 130);
  t.regex(result.stderr, /SIGINT: tearing down/);
  t.regex(result.stdout, /summary: tiny@1 stopped/, 'the summary is printed on the way out');
  t.false(processAlive(qemuPid));
  t.deepEqual(await leftovers(tmp), [], 'no run dir, socket or temp disk left');
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});

test('`lazyboot boot` after the pivot, fill running: Ctrl-C to the whole process group stops QEMU in order (its own process group), the writes bitmap is folded into the map, exit 130', async (t) => {
  t.timeout(3 * TEST_TIMEOUT_MS);
  // A boot reads nearly all of the tiny image's data and the pivot maps its zero blocks, so the
  // fill would be over at once: the unread 8 MiB tail keeps it running.
  const { served, tmp } = await tinyServed(t, { withUnreadTail: true });
  const stayUp = ['--qemu-arg=-fw_cfg', `--qemu-arg=name=${STAY_UP_FW_CFG_NAME},string=1`];
  // A slow fill (the tail takes ~2 min at 64 KiB/s): it is still running when the Ctrl-C comes.
  const child = execa('node', [CLI, 'boot', 'tiny', '--from', served.uri, '--memory', '256M', '--timeout', '300s', '--fill-rate', '64K', ...stayUp], { env: { TMPDIR: tmp }, reject: false, detached: true });
  t.teardown(() => void child.kill('SIGKILL'));
  const qemuPid = Number((await waitForLine(child, 'stderr', /QEMU up \(pid (\d+)\)/))[1]);
  await waitForLine(child, 'stderr', /pivot to native at [\d.]+ s: the guest was paused [\d.]+ ms/);
  process.kill(-child.pid!, 'SIGINT');
  const result = await child;
  t.log(result.stderr);
  t.log(result.stdout);
  t.is(result.exitCode, 130);
  // QEMU did not die of the SIGINT: it quit when asked, so its persistent bitmap was stored and read back.
  t.regex(result.stderr, /after the pivot: \d+ blocks made present \(streamed by QEMU, or zero blocks mapped to the disk\), \d+ written by the guest \(from the writes bitmap\)/);
  t.regex(result.stdout, /summary: tiny@1 stopped/);
  t.notRegex(result.stdout, /killed by/);
  t.regex(result.stdout, /fill \(QEMU block-stream\): stopped (at|before its first progress report)/, 'the fill was running and was stopped, not complete');
  t.false(processAlive(qemuPid));
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
