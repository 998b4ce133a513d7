// `lazyboot boot --json`: milestones, the fill's progress and the summary as JSON lines on stdout
// (every line parses, `summary` is last), on the tiny image with a live pivot and a full fill;
// the VM is stopped through its control socket, whose name the first line gives.
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { STAY_UP_FW_CFG_NAME } from '../guest/qemu-args.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir, serveRepository } from './boot-support.js';

interface JsonLine {
  readonly event: string;
  readonly t: number;
  readonly [field: string]: unknown;
}

test('tiny, --json: control, accelerator, qemu-up, storage-ready, pivot, fill-progress up to fill-complete, then the summary last', async (t) => {
  t.timeout(600_000);
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const served = await serveRepository(t, await importImage(scratch, tiny.path, 'tiny'));
  const tmp = path.join(scratch, 'tmp');
  const runtime = path.join(scratch, 'run');
  await mkdir(tmp);
  await mkdir(runtime, { mode: 0o700 });
  const env = { TMPDIR: tmp, XDG_RUNTIME_DIR: runtime };
  const stayUp = ['--qemu-arg=-fw_cfg', `--qemu-arg=name=${STAY_UP_FW_CFG_NAME},string=1`];
  const boot = execa('node', [CLI, 'boot', 'tiny', '--json', '--from', served.uri, '--memory', '256M', '--timeout', '300s', '--fill-rate', '8M', ...stayUp], { env, reject: false });
  t.teardown(() => void boot.kill('SIGKILL'));
  const lines: JsonLine[] = [];
  let buffered = '';
  const filled = new Promise<void>((resolve, reject) => {
    boot.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const parsed = JSON.parse(line) as JsonLine; // every stdout line is JSON
        lines.push(parsed);
        if (parsed.event === 'fill-complete') resolve();
      }
    });
    void boot.then((result) => reject(new Error(`boot ended before the fill completed: ${result.stderr}`)));
  });
  await filled;
  const control = lines.find((line) => line.event === 'control')!;
  t.regex(String(control.name), /^tiny-\d+$/, 'a default name, given in the first line');
  t.is(lines[0]!.event, 'control');
  const stopped = await execa('node', [CLI, 'stop', String(control.name)], { env, reject: false });
  t.is(stopped.exitCode, 0, stopped.stderr);
  const result = await boot;
  t.is(result.exitCode, 0, result.stderr);
  const events = lines.map((line) => line.event);
  t.log(events.join(' '));
  for (const expected of ['accelerator', 'qemu-up', 'storage-ready', 'pivot', 'fill-progress', 'fill-complete', 'summary']) t.true(events.includes(expected), expected);
  t.is(events.at(-1), 'summary');
  t.true(events.indexOf('storage-ready') < events.indexOf('pivot') && events.indexOf('pivot') < events.indexOf('fill-complete'));
  const ready = lines.find((line) => line.event === 'storage-ready')!;
  t.is(ready.source, 'hook');
  t.true(Number(ready.fetchedBytes) > 0);
  const pivot = lines.find((line) => line.event === 'pivot')!;
  t.true(Number(pivot.pauseMs) > 0);
  const progress = lines.filter((line) => line.event === 'fill-progress');
  t.true(progress.every((line, i) => i === 0 || Number(line.offset) >= Number(progress[i - 1]!.offset)), 'progress only grows');
  t.is(progress.at(-1)!.offset, progress.at(-1)!.len, 'the last progress is the whole disk');
  const summary = lines.at(-1)!;
  t.like(summary, { image: 'tiny@1', state: 'stopped', storageReady: 'hook', fill: 'complete', disk: null });
  t.is(summary.presentBlocks, summary.totalBlocks, 'the fill made every block present');
  t.true(lines.every((line, i) => i === 0 || line.t >= lines[i - 1]!.t));
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
