// `lazyboot image trace ls|show|rm` on traces a device recorded (read by a real client), run as a
// user runs the CLI; bad names and missing traces end in one line and a non-zero exit.
import test from 'ava';
import { join } from 'node:path';
import { readdir } from 'node:fs/promises';
import { openCorDevice } from '../lib/cor/device.js';
import { makeImage, qemuIo } from './cor-fixtures.js';
import { inTempDir, lazyboot as lazybootIn, oneLine } from './helpers/repo-cli.js';
import { startServing } from './helpers/served-process.js';

const BS = 65536;

test('image trace ls, show and rm list, describe and delete the traces a boot recorded', (t) => inTempDir(async (dir) => {
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const traces = join(dir, 'traces');
  // No default repository: only the host cache holds traces.
  const lazyboot = (args: string[]) => lazybootIn(args, { XDG_DATA_HOME: join(dir, 'data') });
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir], trace: { dir: traces, to: false } });
  try {
    await qemuIo(device.uri, [`read ${10 * BS} ${4 * BS}`, `read ${2 * BS} ${BS}`]);
    device.trace!.milestone('storage-ready');
    await device.trace!.finish();
  } finally {
    await device.close();
  }
  const [digest] = await readdir(traces);

  const ls = await lazyboot(['image', 'trace', 'ls', '--trace-dir', traces]);
  t.is(ls.exitCode, 0, ls.stderr);
  t.regex(ls.stdout, /^IMAGE +MANIFEST +BOOTS +BLOCKS/m);
  t.regex(ls.stdout, new RegExp(`^demo@1 +${digest!.slice(0, 12)} +1 +4 +256 KiB`, 'm'));

  for (const ref of ['demo', 'demo@1', digest!.slice(0, 10)]) {
    const show = await lazyboot(['image', 'trace', 'show', ref, '--blocks', '--trace-dir', traces]);
    t.is(show.exitCode, 0, show.stderr);
    t.regex(show.stdout, /image: +demo@1/);
    t.regex(show.stdout, /blocks: +4 \(256 KiB\) in 2 runs/);
    t.regex(show.stdout, /storage-ready: +\d+\.\d s/);
    t.deepEqual([...show.stdout.matchAll(/block (\d+)$/gm)].map((m) => Number(m[1])), [10, 11, 12, 2]);
  }

  for (const [args, pattern] of [
    [['show', 'demo@2'], /no boot trace of demo@2 in .*: list the stored traces with `lazyboot image trace ls`/],
    [['rm', 'other'], /no boot trace of other/],
    [['show', 'bad name!'], /image name/i],
  ] as const) {
    const result = await lazyboot(['image', 'trace', ...args, '--trace-dir', traces]);
    t.is(result.exitCode, 1, `${args.join(' ')}: ${result.stdout}`);
    t.true(oneLine(result.stderr), result.stderr);
    t.regex(result.stderr, pattern);
  }

  const rm = await lazyboot(['image', 'trace', 'rm', 'demo@1', '--trace-dir', traces]);
  t.is(rm.exitCode, 0, rm.stderr);
  t.regex(rm.stdout, /removed the boot trace of demo@1/);
  t.deepEqual(await readdir(traces), []);
  t.regex((await lazyboot(['image', 'trace', 'ls', '--trace-dir', traces])).stdout, /no boot traces in /);
}));

test('image trace ls follows $XDG_CACHE_HOME', (t) => inTempDir(async (dir) => {
  const result = await lazybootIn(['image', 'trace', 'ls'], { XDG_CACHE_HOME: join(dir, 'cache'), XDG_DATA_HOME: join(dir, 'data') });
  t.is(result.exitCode, 0);
  t.is(result.stdout.trim(), `no boot traces in ${join(dir, 'cache', 'lazyboot', 'traces')}`);
}));

test('image trace ls, show and rm --repo work on the traces in the repository, as a directory and through repo serve\'s write path', (t) => inTempDir(async (dir) => {
  t.timeout(120_000);
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const env = { XDG_DATA_HOME: join(dir, 'data'), XDG_CACHE_HOME: join(dir, 'cache') };
  // A boot from a repository directory stores its trace there (not in the host cache).
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir], trace: { dir: join(dir, 'cache', 'lazyboot', 'traces') } });
  try {
    await qemuIo(device.uri, [`read ${10 * BS} ${4 * BS}`, `read ${2 * BS} ${BS}`]);
    await device.trace!.finish();
  } finally {
    await device.close();
  }
  const ls = await lazybootIn(['image', 'trace', 'ls', '--repo', image.repoDir], env);
  t.is(ls.exitCode, 0, ls.stderr);
  t.regex(ls.stdout, /^IMAGE +MANIFEST .* KEPT IN$/m);
  t.regex(ls.stdout, /^demo@1 +[0-9a-f]{12} +1 +4 +256 KiB .* repository$/m);
  t.notRegex(ls.stdout, /host cache/);

  const writeSocket = join(dir, 'write.sock');
  const served = await startServing(['repo', 'serve', '--repo', image.repoDir, '--socket', join(dir, 'repo.sock'), '--write-socket', writeSocket]);
  try {
    const writePath = `http+unix:///?socket=${writeSocket}`;
    const show = await lazybootIn(['image', 'trace', 'show', 'demo', '--blocks', '--repo', writePath], env);
    t.is(show.exitCode, 0, show.stderr);
    t.regex(show.stdout, /kept in: +the repository http\+unix/);
    t.deepEqual([...show.stdout.matchAll(/block (\d+)$/gm)].map((m) => Number(m[1])), [10, 11, 12, 2]);

    const nbd = await lazybootIn(['image', 'trace', 'ls', '--repo', served.uri], env);
    t.is(nbd.exitCode, 1);
    t.true(oneLine(nbd.stderr), nbd.stderr);
    t.regex(nbd.stderr, /cannot write to "nbd\+unix.*use a repository directory, http\+unix/);

    const rm = await lazybootIn(['image', 'trace', 'rm', 'demo@1', '--repo', writePath], env);
    t.is(rm.exitCode, 0, rm.stderr);
    t.regex(rm.stdout, /removed the boot trace of demo@1 .* from the repository http\+unix/);
  } finally {
    await served.stop();
  }
  t.deepEqual(await readdir(join(image.repoDir, 'objects', 'demo', '1', 'trace')), []);
  const after = await lazybootIn(['image', 'trace', 'ls', '--repo', image.repoDir], env);
  t.regex(after.stdout, new RegExp(`no boot traces in ${image.repoDir} or `));
}));
