// The `lazyboot disk` commands as a user runs them: fill, status, and one-line errors.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { join } from 'node:path';
import { makeImage } from './cor-fixtures.js';
import { CLI as BIN } from './helpers/cli-path.js';

const lazyboot = (args: string[]) => execa('node', [BIN, ...args], { reject: false });

test('disk fill makes a cmp-identical disk; status reports it; a foreign image is refused in one line', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 40 * 65536 + 1000 });
  await makeImage(dir, 'other', { size: 8 * 65536, repoDir: image.repoDir });
  const disk = join(dir, 'disk.raw');

  const missing = await lazyboot(['disk', 'status', '--disk', disk]);
  t.is(missing.exitCode, 1);
  t.regex(missing.stderr, /^lazyboot: [^\n]*has no map[^\n]*$/);

  const fill = await lazyboot(['disk', 'fill', '--disk', disk, '--image', 'demo', '--from', image.repoDir, '--json']);
  t.is(fill.exitCode, 0, fill.stderr);
  const events = fill.stdout.trim().split('\n').map((line) => JSON.parse(line));
  const { fetchedBytes, ...rest } = events.at(-1);
  t.deepEqual(rest, { event: 'fill-done', presentBlocks: 41, totalBlocks: 41, done: true });
  // Every data block crossed once; zero blocks between data may be fetched along (a merged run),
  // so the bound is the image's data bytes below and its size above.
  const dataBytes = dataBytesOf(image.content, 65536);
  t.true(dataBytes > 0 && fetchedBytes >= dataBytes && fetchedBytes <= image.content.length, `fetched ${fetchedBytes} for ${dataBytes} data bytes`);
  await execa('cmp', [disk, image.rawPath]);

  const status = await lazyboot(['disk', 'status', '--disk', disk, '--json']);
  const parsed = JSON.parse(status.stdout);
  t.like(parsed, { image: 'demo@1', presentBlocks: 41, totalBlocks: 41, modifiedBlocks: { origin: 0 }, complete: true });
  const human = await lazyboot(['disk', 'status', '--disk', disk]);
  t.regex(human.stdout, /present: +41 \/ 41 blocks \(100\.0%\)/);

  // Fill again: nothing to do, nothing fetched (resumable: the map is the state).
  const again = await lazyboot(['disk', 'fill', '--disk', disk, '--from', image.repoDir]);
  t.regex(again.stdout, /41\/41 blocks present, 0 B fetched/);

  const foreign = await lazyboot(['disk', 'serve', 'other', '--disk', disk, '--from', image.repoDir]);
  t.is(foreign.exitCode, 1);
  t.regex(foreign.stderr, /^lazyboot: [^\n]*disk\.raw\.map belongs to image demo@1, not other@1: [^\n]*$/);

  const badRate = await lazyboot(['disk', 'fill', '--disk', disk, '--from', image.repoDir, '--rate', 'fast']);
  t.is(badRate.exitCode, 1);
  t.regex(badRate.stderr, /invalid rate "fast"/);
}, { unsafeCleanup: true }));

test('a mistyped --from directory is refused in one line and is not created (nor is the disk)', (t) => withDir(async ({ path: dir }) => {
  const typo = join(dir, 'no-such-repo');
  const disk = join(dir, 'disk.raw');
  for (const command of [['disk', 'fill', '--disk', disk, '--image', 'demo'], ['disk', 'serve', 'demo', '--disk', disk, '--socket', join(dir, 's.sock')]]) {
    const result = await lazyboot([...command, '--from', typo]);
    t.is(result.exitCode, 1, command.join(' '));
    t.regex(result.stderr, /^lazyboot: [^\n]*no-such-repo is not a lazyboot repository \(it does not exist\)[^\n]*$/);
  }
  const { readdir } = await import('node:fs/promises');
  t.deepEqual(await readdir(dir), [], 'no repository, disk or map was created');
}, { unsafeCleanup: true }));

/** Bytes of the blocks of `content` that are not all zeros. */
function dataBytesOf(content: Buffer, blockSize: number): number {
  let bytes = 0;
  for (let at = 0; at < content.length; at += blockSize) {
    const block = content.subarray(at, Math.min(content.length, at + blockSize));
    if (block.some((byte) => byte !== 0)) bytes += block.length;
  }
  return bytes;
}
