// `lazyboot run` as a CI job uses it, on the stock debian-plain image: four runs of one image at
// once (each its own temp disk, QEMU, sockets), each showing part of the contract — copy in, live
// output kept apart, exit code 3 passed through, copy out after the failure, --json events on fd 3;
// --timeout killing the command (exit 124, the console's last lines); stdin with -i (the command's
// exit 255 passed through); a command missing in the guest (exit 127, one line) — and nothing left
// behind by any of them.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa, type Options } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

test.serial('four `lazyboot run` of one image in parallel: copy in/out + exit 3 + --json, timeout 124, stdin + exit 255, missing command 127; nothing left behind', async (t) => {
  t.timeout(20 * 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, plain.path, 'plain');
  const tmp = path.join(scratch, 'tmp');
  const results = path.join(scratch, 'results');
  await mkdir(tmp);
  await mkdir(results);
  const payload = randomBytes(3 * 1024 * 1024);
  await writeFile(path.join(scratch, 'payload.bin'), payload);
  const stdinData = randomBytes(1024 * 1024);
  const run = async (flags: string[], command: string[], extra: Options = {}) => {
    const result = await execa('node', [CLI, 'run', 'plain', '--from', repoDir, '--memory', '512M', '--boot-timeout', '15m', ...flags, '--', ...command], {
      env: { TMPDIR: tmp },
      reject: false,
      ...extra,
    });
    return { exitCode: result.exitCode, stdout: String(result.stdout), stderr: String(result.stderr), fd3: String(result.stdio[3] ?? '') };
  };

  const started = Date.now();
  const [job, slow, fed, missing] = await Promise.all([
    run(
      ['--copy-in', `${path.join(scratch, 'payload.bin')}:/tmp/`, '--copy-out', `/tmp/result.bin:${results}/`, '--json', '--json-fd', '3'],
      ['sh', '-c', 'cp /tmp/payload.bin /tmp/result.bin && echo to-stdout && echo to-stderr >&2; exit 3'],
      { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
    ),
    run(['--timeout', '10s'], ['sh', '-c', 'echo started; sleep 1000; echo never']),
    run(['-i'], ['sh', '-c', 'sha256sum | cut -c1-64; exit 255'], { input: stdinData }),
    run([], ['no-such-command-here', '--version']),
  ]);
  t.log(`four runs in ${Date.now() - started} ms`);

  t.is(job.exitCode, 3, job.stderr);
  t.is(job.stdout, 'to-stdout');
  t.regex(job.stderr, /^to-stderr$/m);
  t.is(sha256(await readFile(path.join(results, 'result.bin'))), sha256(payload), 'copied out after the command failed');
  const events = job.fd3.trim().split('\n').map((line) => JSON.parse(line) as Record<string, any>);
  const names = events.map((event) => event.event);
  t.log(names.join(' '));
  for (const name of ['accelerator', 'qemu-up', 'agent-up', 'copied', 'command-started', 'command-exited', 'summary']) t.true(names.includes(name), name);
  t.true(names.indexOf('agent-up') < names.indexOf('command-started'));
  t.deepEqual(events.filter((event) => event.event === 'copied').map((event) => [event.direction, event.sha256]), [['in', sha256(payload)], ['out', sha256(payload)]]);
  t.is(events.find((event) => event.event === 'command-exited')!.exitCode, 3);
  const summary = events.at(-1)!;
  t.is(summary.event, 'summary');
  t.is(summary.exitCode, 3);
  t.true(summary.fetchedBytes > 0 && summary.fetchedBytes < summary.imageBytes, 'fetched part of the image');
  t.true(summary.bootMs > 0 && summary.commandMs >= 0);
  t.true(events.every((event, i) => i === 0 || event.t >= events[i - 1]!.t), 'events in time order');

  t.is(slow.exitCode, 124, slow.stderr);
  t.is(slow.stdout, 'started');
  t.regex(slow.stderr, /^lazyboot: the command did not end within 10 s: killed in the guest \(exit 124\)$/m);
  t.regex(slow.stderr, /^lazyboot: last lines of the guest console:$/m);

  t.is(fed.exitCode, 255, fed.stderr);
  t.is(fed.stdout, sha256(stdinData));

  t.is(missing.exitCode, 127, missing.stderr);
  t.is(missing.stdout, '');
  t.regex(missing.stderr, /^lazyboot: no-such-command-here: not found in the guest: check the name and the guest's PATH/m);

  t.deepEqual(await leftovers(tmp), [], 'no temp disks, run dirs or sockets left');
  t.deepEqual(await qemuProcessesMentioning(tmp), [], 'no QEMU left');
});
