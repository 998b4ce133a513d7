// `image import` of untrusted image files: nothing but the named file's own bytes ever enters the
// repository (no backing file, no data file, no probed format), and non-disks are refused.
import test from 'ava';
import { execa } from 'execa';
import { appendFile, readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { lazyboot, inTempDir, oneLine } from './helpers/repo-cli.js';
import { MiB } from './helpers/repo-fixtures.js';
import { inspectImageFile, qemuSpecFor } from '../lib/repo/image-file.js';
import { openImageSource } from '../lib/repo/image-source.js';
import { Repository } from '../lib/repo/repository.js';
import type { ImportFailed } from '../lib/repo/errors.js';

/** A host file an attacker would like to read: its bytes must never reach the repository. */
async function hostSecret(dir: string): Promise<{ path: string; marker: string }> {
  const marker = `HOST-SECRET-${randomBytes(8).toString('hex')}`;
  const path = join(dir, 'passwd-like');
  await writeFile(path, `${marker}\n`.repeat(2000));
  return { path, marker };
}

/** Whether any file of the repository holds `marker` (packs hold blocks as they are). */
async function repositoryHolds(repo: string, marker: string): Promise<boolean> {
  const packs = await readdir(join(repo, 'packs')).catch(() => [] as string[]);
  for (const pack of packs) if ((await readFile(join(repo, 'packs', pack))).includes(marker)) return true;
  return false;
}

async function imageNames(repo: string): Promise<string[]> {
  return readdir(join(repo, 'manifests')).catch(() => []);
}

async function qcow2WithBacking(dir: string, backing: string): Promise<string> {
  const file = join(dir, 'evil.qcow2');
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-F', 'raw', '-b', backing, file, '1M']);
  return file;
}

test('a qcow2 whose backing file is a host file is refused, with or without --format', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const secret = await hostSecret(dir);
    const file = await qcow2WithBacking(dir, secret.path);
    for (const format of [['--format', 'qcow2'], []]) {
      const result = await lazyboot(['image', 'import', file, 'evil', '--repo', repo, ...format]);
      t.is(result.exitCode, 1, result.stdout);
      t.true(oneLine(result.stderr), result.stderr);
      t.regex(result.stderr, format.length ? /has a backing file .*passwd-like.*self-contained/ : /looks like a qcow2 image.*--format qcow2/);
    }
    t.deepEqual(await imageNames(repo), []);
    t.false(await repositoryHolds(repo, secret.marker));
  }));

test('a qcow2 whose backing is a json: spec naming a host file is refused', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const secret = await hostSecret(dir);
    const file = await qcow2WithBacking(dir, `json:${JSON.stringify({ driver: 'raw', file: { driver: 'file', filename: secret.path } })}`);
    const result = await lazyboot(['image', 'import', file, 'evil', '--format', 'qcow2', '--repo', repo]);
    t.is(result.exitCode, 1);
    t.true(oneLine(result.stderr), result.stderr);
    t.regex(result.stderr, /has a backing file \("json:/);
    t.deepEqual(await imageNames(repo), []);
    t.false(await repositoryHolds(repo, secret.marker));
  }));

test('a qcow2 with an external data file is refused', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const file = join(dir, 'df.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'df.data')}`, file, '1M']);
    const result = await lazyboot(['image', 'import', file, 'evil', '--format', 'qcow2', '--repo', repo]);
    t.is(result.exitCode, 1);
    t.true(oneLine(result.stderr), result.stderr);
    t.regex(result.stderr, /keeps its data in another file .*df\.data/);
    t.deepEqual(await imageNames(repo), []);
  }));

test('a vmdk whose extent is another file is refused', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const file = join(dir, 'flat.vmdk');
    await execa('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', file, '1M']);
    const result = await lazyboot(['image', 'import', file, 'evil', '--format', 'vmdk', '--repo', repo]);
    t.is(result.exitCode, 1);
    t.true(oneLine(result.stderr), result.stderr);
    t.regex(result.stderr, /has an extent in another file .*flat-flat\.vmdk/);
  }));

test('a raw disk whose sector 0 holds a qcow2 header needs --format, and --format raw imports its own bytes', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const secret = await hostSecret(dir);
    // What a guest can do to its own raw disk: write a qcow2 header (backed by a host file) at 0.
    const header = await readFile(await qcow2WithBacking(dir, secret.path));
    const raw = join(dir, 'guest.raw');
    await writeFile(raw, Buffer.concat([header, randomBytes(2 * MiB - header.length)]));
    const probed = await lazyboot(['image', 'import', raw, 'guest', '--repo', repo]);
    t.is(probed.exitCode, 1);
    t.true(oneLine(probed.stderr), probed.stderr);
    t.regex(probed.stderr, /looks like a qcow2 image, but a raw disk can look like one too: say which it is: --format qcow2, or --format raw/);
    t.deepEqual(await imageNames(repo), []);
    const asRaw = await lazyboot(['image', 'import', raw, 'guest', '--format', 'raw', '--repo', repo]);
    t.is(asRaw.exitCode, 0, asRaw.stderr);
    const out = join(dir, 'out.raw');
    t.is((await lazyboot(['image', 'export', 'guest', out, '--repo', repo])).exitCode, 0);
    t.true((await readFile(out)).equals(await readFile(raw)), 'the image is the raw file, byte for byte');
    t.false(await repositoryHolds(repo, secret.marker));
  }));

test('character devices, directories and pipes are refused with one line', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const fifo = join(dir, 'pipe');
    await execa('mkfifo', [fifo]);
    const cases: Array<[string, RegExp]> = [
      ['/dev/zero', /\/dev\/zero is a character device, not a disk image: import a regular file or a block device/],
      [dir, /is a directory, not a disk image/],
      [fifo, /is a pipe, not a disk image/],
    ];
    for (const [file, pattern] of cases) {
      for (const format of [[], ['--format', 'raw']]) {
        const result = await lazyboot(['image', 'import', file, 'dev', '--repo', repo, ...format]);
        t.is(result.exitCode, 1, `${file} ${format.join(' ')}`);
        t.true(oneLine(result.stderr), result.stderr);
        t.regex(result.stderr, pattern);
      }
    }
    t.deepEqual(await imageNames(repo), []);
  }));

test('a format lazyboot does not import is refused; a plain qcow2 imports with --format qcow2', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const file = join(dir, 'plain.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', file, '1M']);
    const luks = await lazyboot(['image', 'import', file, 'x', '--format', 'luks', '--repo', repo]);
    t.is(luks.exitCode, 1);
    t.regex(luks.stderr, /cannot import format "luks": use one of raw, qcow2/);
    const wrong = await lazyboot(['image', 'import', file, 'x', '--format', 'vdi', '--repo', repo]);
    t.is(wrong.exitCode, 1);
    t.true(oneLine(wrong.stderr), wrong.stderr);
    t.regex(wrong.stderr, /cannot read .*plain\.qcow2 as a disk image/);
    const ok = await lazyboot(['image', 'import', file, 'x', '--format', 'qcow2', '--repo', repo]);
    t.is(ok.exitCode, 0, ok.stderr);
    t.regex(ok.stdout, /^x@1: 1 MiB/);
  }));

test('the qemu-nbd spec for a non-raw image opens no backing file even if the header names one', (t) =>
  inTempDir(async (dir) => {
    const secret = await hostSecret(dir);
    const file = await qcow2WithBacking(dir, secret.path);
    // What qemu-nbd would read with a plain filename: the host file, through the backing chain.
    const followed = await execa('nbdcopy', ['--', '[', 'qemu-nbd', '-r', '-f', 'qcow2', file, ']', '-'], { encoding: 'buffer' });
    t.true(Buffer.from(followed.stdout).includes(secret.marker), 'the attack works without the spec');
    const spec = qemuSpecFor(file, false, 'qcow2');
    const guarded = await execa('nbdcopy', ['--', '[', 'qemu-nbd', '-r', spec, ']', '-'], { encoding: 'buffer' });
    t.is(guarded.stdout.length, MiB);
    t.true(Buffer.from(guarded.stdout).equals(Buffer.alloc(MiB)), 'with "backing": null the unallocated image reads as zeros');
  }));

test('a raw disk that looks like a format lazyboot cannot import (qcow v1, luks) is told to use --format raw, not that format', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const file = join(dir, 'old.qcow');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow', file, '1M']);
    const probed = await lazyboot(['image', 'import', file, 'old', '--repo', repo]);
    t.is(probed.exitCode, 1);
    t.true(oneLine(probed.stderr), probed.stderr);
    t.regex(probed.stderr, /looks like a qcow image, which lazyboot does not import/);
    t.regex(probed.stderr, /--format raw/);
    t.notRegex(probed.stderr, /--format qcow\b/);
    t.deepEqual(await imageNames(repo), []);
  }));

test('a raw file that grows, shrinks or is rewritten while it is imported is refused, and no version is made', (t) =>
  inTempDir(async (dir) => {
    const repo = await Repository.open(join(dir, 'repo'), { create: true });
    try {
      for (const change of ['grow', 'shrink', 'rewrite'] as const) {
        const file = join(dir, `${change}.raw`);
        await writeFile(file, randomBytes(4 * MiB));
        const image = await inspectImageFile(file);
        const source = openImageSource(image);
        // The change lands after the file was inspected and while it is being read.
        await new Promise((resolve) => setTimeout(resolve, 20));
        if (change === 'grow') await appendFile(file, randomBytes(MiB));
        if (change === 'shrink') await truncate(file, MiB);
        if (change === 'rewrite') await writeFile(file, randomBytes(4 * MiB));
        const error = await t.throwsAsync(repo.importImage(change, source.stream, { size: source.size }));
        t.regex(error!.message, /changed while it was read/, change);
        t.regex((error as ImportFailed).hint ?? '', /nothing writes to it/);
        t.deepEqual(await repo.versions(change), [], `${change}: no version`);
      }
    } finally {
      await repo.close();
    }
  }));
