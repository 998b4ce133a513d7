// The boot trace end to end: `lazyboot boot tiny` twice on temporary disks. The first boot records
// the blocks it read until boot-complete; the second replays them ahead of the guest and says how
// much of the replay the guest used. Real QEMU, real guest, a separate `lazyboot repo serve`.
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { TraceStore } from '../lib/trace/trace-store.js';
import { CLI, importImage, leftovers, scratchDir, serveRepository } from './boot-support.js';

test('a first boot records its trace, the second replays it ahead of the guest, which reads most of it', async (t) => {
  t.timeout(240_000);
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, tiny.path, 'tiny');
  const served = await serveRepository(t, repoDir);
  const traces = path.join(scratch, 'traces');
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const boot = () => execa('node', [CLI, 'boot', 'tiny', '--from', served.uri, '--memory', '256M', '--timeout', '120s', '--trace-dir', traces], { env: { TMPDIR: tmp }, reject: false });

  const first = await boot();
  t.is(first.exitCode, 0, first.stderr);
  t.notRegex(first.stderr, /replaying/);
  t.regex(first.stderr, /boot trace: recorded \d+ blocks/);
  const store = new TraceStore(traces);
  const [recorded] = await store.list();
  t.is(recorded?.imageRef, 'tiny@1');
  t.is(recorded?.recordings, 1);
  t.true(recorded!.blocks > 50, `${recorded!.blocks} blocks recorded`);
  t.true(recorded!.storageReadyMs !== undefined && recorded!.readyMs! >= recorded!.storageReadyMs!);

  const second = await boot();
  t.log(second.stderr);
  t.log(second.stdout);
  t.is(second.exitCode, 0, second.stderr);
  t.regex(second.stderr, new RegExp(`boot trace: replaying ${recorded!.blocks} blocks`));
  const summary = /boot trace: replayed ([\d.]+) MiB in (\d+) requests ahead of the guest, which read ([\d.]+) MiB of it \((\d+)%\)/.exec(second.stdout);
  t.truthy(summary, second.stdout);
  // Some of the trace the guest fetches itself before the replay gets there; of what the replay
  // fetched, the guest reads most (the same image, the same boot).
  t.true(Number(summary![1]) > 1, 'the replay fetched ahead');
  t.true(Number(summary![4]) >= 80, `${summary![4]}% of the replay read`);
  const [refined] = await store.list();
  t.is(refined?.recordings, 2, 'the second recording joins the first');
  t.deepEqual(await leftovers(tmp), []);
});
