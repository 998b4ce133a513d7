// `image export` never destroys its destination: it writes beside it and renames on success.
import test from 'ava';
import { execa } from 'execa';
import { readdir, readFile, writeFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BIN, lazyboot, inTempDir, oneLine } from './helpers/repo-cli.js';
import { flipBit, packsEndingWith } from './helpers/repo-damage.js';
import { MiB } from './helpers/repo-fixtures.js';

test('an export that meets a corrupt block leaves the old destination intact and no temp file', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, randomBytes(4 * MiB));
    t.is((await lazyboot(['image', 'import', disk, 'alpha', '--repo', repo])).exitCode, 0);
    const out = join(dir, 'out', 'previous.raw');
    await execa('mkdir', [join(dir, 'out')]);
    const previous = randomBytes(1234);
    await writeFile(out, previous);
    const [pack] = await packsEndingWith(repo, '.pack');
    await flipBit(pack!, 3 * MiB + 17);
    const result = await lazyboot(['image', 'export', 'alpha', out, '--repo', repo]);
    t.is(result.exitCode, 1);
    t.true(oneLine(result.stderr), result.stderr);
    t.regex(result.stderr, /corrupt \(SHA-256 mismatch\)/);
    t.true((await readFile(out)).equals(previous), 'the old file is unchanged');
    t.deepEqual(await readdir(join(dir, 'out')), ['previous.raw'], 'no temp file left');
  }));

test('a successful export replaces the destination with the image, mode 0600', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, randomBytes(2 * MiB + 512));
    await lazyboot(['image', 'import', disk, 'alpha', '--repo', repo]);
    const out = join(dir, 'out.raw');
    await writeFile(out, randomBytes(8 * MiB));
    const result = await lazyboot(['image', 'export', 'alpha', out, '--repo', repo]);
    t.is(result.exitCode, 0, result.stderr);
    t.true((await readFile(out)).equals(await readFile(disk)));
    t.is((await stat(out)).mode & 0o777, 0o600);
    t.false((await readdir(dir)).some((name) => name.includes('lazyboot-export')));
  }));

test('Ctrl-C during an export removes the temp file and keeps the old destination', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, randomBytes(192 * MiB));
    t.is((await lazyboot(['image', 'import', disk, 'big', '--repo', repo])).exitCode, 0);
    const outDir = join(dir, 'out');
    await execa('mkdir', [outDir]);
    const out = join(outDir, 'big.raw');
    await writeFile(out, 'old');
    const exporting = execa('node', [BIN, 'image', 'export', 'big', out, '--repo', repo], { reject: false });
    try {
      let sawTemp = false;
      for (let i = 0; i < 1000 && !sawTemp; i++) {
        sawTemp = (await readdir(outDir)).some((name) => name.includes('lazyboot-export'));
        if (!sawTemp) await new Promise((resolve) => setTimeout(resolve, 5));
      }
      t.true(sawTemp, 'the export writes a temp file beside the destination');
      // Stopped first, so that a loaded machine cannot let it finish before the Ctrl-C lands.
      exporting.kill('SIGSTOP');
      exporting.kill('SIGINT');
      exporting.kill('SIGCONT');
      const result = await exporting;
      t.is(result.exitCode, 130, `interrupted, not finished: ${result.stdout} ${result.stderr}`);
    } finally {
      exporting.kill('SIGKILL');
    }
    t.deepEqual(await readdir(outDir), ['big.raw']);
    t.is(await readFile(out, 'utf8'), 'old');
  }));

test('an image with more zero/data runs per 4 MiB than one block status answer holds exports whole', (t) =>
  inTempDir(async (dir) => {
    // Alternating data and zero blocks: 64 runs per 4 MiB chunk, where the image backend's block
    // status describes at most 32. The export used to leave the rest of each chunk as zeros.
    const disk = join(dir, 'disk.raw');
    const content = Buffer.alloc(8 * MiB);
    for (let block = 0; block < 128; block += 2) randomBytes(65536).copy(content, block * 65536);
    await writeFile(disk, content);
    const repo = join(dir, 'repo');
    t.is((await lazyboot(['image', 'import', disk, 'striped', '--repo', repo])).exitCode, 0);
    const out = join(dir, 'out.raw');
    const result = await lazyboot(['image', 'export', 'striped', out, '--repo', repo]);
    t.is(result.exitCode, 0, result.stderr);
    t.true((await readFile(out)).equals(content));
  }));
