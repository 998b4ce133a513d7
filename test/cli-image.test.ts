// `lazyboot image …` and `lazyboot repo serve` as a user runs them: real files, real qemu tools.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { readdir, rm, access, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sampleDisk, writeDisk, MiB } from './helpers/repo-fixtures.js';
import { CLI as BIN } from './helpers/cli-path.js';

function lazyboot(args: string[], env: Record<string, string> = {}) {
  return execa('node', [BIN, ...args], { reject: false, env });
}

const inTempDir = (body: (dir: string) => Promise<void>) => withDir(({ path }) => body(path), { unsafeCleanup: true });

test('image import prints name@N, bytes stored, new vs present; a re-import stores nothing', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const file = await writeDisk(join(dir, 'disk.raw'), sampleDisk());
    const first = await lazyboot(['image', 'import', file, 'debian', '--repo', repo]);
    t.is(first.exitCode, 0, first.stderr);
    t.regex(first.stdout, /^debian@1: .* in 49 blocks of 64 KiB; 31 new \(1\.9 MiB stored, 1967616 bytes\), 2 already present, 16 zero$/m);
    const second = await lazyboot(['image', 'import', file, 'debian', '--repo', repo]);
    t.regex(second.stdout, /^debian@2: .*; 0 new \(0 B stored, 0 bytes\), 33 already present, 16 zero$/m);
    const small = await lazyboot(['image', 'import', file, 'small', '--block-size', '4K', '--repo', repo]);
    t.regex(small.stdout, /in 769 blocks of 4 KiB/);
    const ls = await lazyboot(['image', 'ls', '--repo', repo]);
    t.deepEqual(ls.stdout.split('\n').slice(1).map((line) => line.split(/\s+/)[0]), ['debian@1', 'debian@2', 'small@1']);
  }));

test('a qcow2 image imports through qemu-nbd with --format qcow2 and exports back to the same raw bytes', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const raw = await writeDisk(join(dir, 'disk.raw'), sampleDisk(3 * MiB + 4096));
    const qcow2 = join(dir, 'disk.qcow2');
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    const imported = await lazyboot(['image', 'import', qcow2, 'q', '--format', 'qcow2', '--repo', repo]);
    t.is(imported.exitCode, 0, imported.stderr);
    t.regex(imported.stdout, /^q@1: /);
    const out = join(dir, 'out.raw');
    const exported = await lazyboot(['image', 'export', 'q', out, '--repo', repo]);
    t.is(exported.exitCode, 0, exported.stderr);
    t.is((await execa('cmp', [raw, out], { reject: false })).exitCode, 0);
    const info = await lazyboot(['image', 'info', 'q@1', '--verify', '--repo', repo]);
    t.regex(info.stdout, /size:\s+3149824 bytes/);
    t.regex(info.stdout, /check:\s+all blocks present and verified/);
  }));

test('the repository defaults to $XDG_DATA_HOME/lazyboot/repo', (t) =>
  inTempDir(async (dir) => {
    const file = await writeDisk(join(dir, 'disk.raw'), randomBytes(64 * 1024));
    const result = await lazyboot(['image', 'import', file, 'x'], { XDG_DATA_HOME: join(dir, 'data') });
    t.is(result.exitCode, 0, result.stderr);
    t.deepEqual(await readdir(join(dir, 'data', 'lazyboot', 'repo', 'manifests')), ['x']);
  }));

test('bad names, unknown images and missing files are one-line errors with exit 1', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const file = await writeDisk(join(dir, 'disk.raw'), randomBytes(8192));
    await lazyboot(['image', 'import', file, 'present', '--repo', repo]);
    const cases: Array<[string[], RegExp]> = [
      [['image', 'import', file, 'a/b'], /^lazyboot: invalid image name "a\/b" \(contains "\/"\)/],
      [['image', 'import', file, 'a..b'], /contains "\.\."/],
      [['image', 'import', file, 'a:b'], /contains ":"/],
      [['image', 'import', file, 'x'.repeat(200)], /longer than 128 characters/],
      [['image', 'import', file, 'ok', '--block-size', '3K'], /invalid block size "3K"/],
      [['image', 'import', join(dir, 'absent.raw'), 'ok'], /cannot open .*absent\.raw/],
      [['image', 'info', 'nothing'], /^lazyboot: unknown image "nothing"/],
      [['image', 'export', 'nothing@3', join(dir, 'o.raw')], /unknown image "nothing@3"/],
    ];
    for (const [args, pattern] of cases) {
      const result = await lazyboot([...args, '--repo', repo]);
      t.is(result.exitCode, 1, args.join(' '));
      t.regex(result.stderr, pattern);
      t.is(result.stderr.trim().split('\n').length, 1, `one line: ${result.stderr}`);
    }
  }));

test('image info reports a missing pack file by name and exits 1; export refuses', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    await lazyboot(['image', 'import', await writeDisk(join(dir, 'disk.raw'), sampleDisk()), 'alpha', '--repo', repo]);
    const pack = (await readdir(join(repo, 'packs'))).find((f) => f.endsWith('.pack'))!;
    await rm(join(repo, 'packs', pack));
    const info = await lazyboot(['image', 'info', 'alpha', '--repo', repo]);
    t.is(info.exitCode, 1);
    t.regex(info.stdout, /check:\s+\d+ problem/);
    t.true(info.stderr.includes(pack) && info.stderr.includes('missing'), info.stderr);
    const exported = await lazyboot(['image', 'export', 'alpha', join(dir, 'o.raw'), '--repo', repo]);
    t.is(exported.exitCode, 1);
    t.true(exported.stderr.includes(pack), exported.stderr);
  }));

test('repo serve prints the URI, logs each connection, and stops cleanly on SIGTERM and SIGINT', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const file = await writeDisk(join(dir, 'disk.raw'), sampleDisk());
    await lazyboot(['image', 'import', file, 'alpha', '--repo', repo]);
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const socket = join(dir, `serve-${signal}.sock`);
      const server = execa('node', [BIN, 'repo', 'serve', '--repo', repo, '--socket', socket], { reject: false, buffer: { stdout: false } });
      try {
        const uri = await new Promise<string>((resolve, reject) => {
          let seen = '';
          server.stdout!.on('data', (chunk: Buffer) => {
            seen += chunk.toString();
            const match = /at (nbd\+unix:\S+)/.exec(seen);
            if (match) resolve(match[1]!);
          });
          server.catch(reject);
          setTimeout(() => reject(new Error(`no URI printed: ${seen}`)), 10000);
        });
        t.is(uri, `nbd+unix:///?socket=${socket}`);
        t.is((await stat(socket)).mode & 0o777, 0o600);
        const out = join(dir, 'copy.raw');
        await execa('nbdcopy', [`nbd+unix:///alpha?socket=${socket}`, out]);
        t.is((await execa('cmp', [file, out], { reject: false })).exitCode, 0);
        server.kill(signal);
        const result = await server;
        t.is(result.exitCode, 0, `${signal}: ${result.stderr}`);
        t.regex(String(result.stderr), /connection 1 .*export "alpha"/);
        await t.throwsAsync(access(socket), undefined, 'socket removed');
      } finally {
        server.kill('SIGKILL');
      }
    }
  }));

test('repo serve --listen serves over TCP; a bad --listen is a one-line error', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    await lazyboot(['image', 'import', await writeDisk(join(dir, 'disk.raw'), sampleDisk()), 'alpha', '--repo', repo]);
    const bad = await lazyboot(['repo', 'serve', '--repo', repo, '--listen', 'nonsense']);
    t.is(bad.exitCode, 1);
    t.regex(bad.stderr, /^lazyboot: invalid --listen "nonsense"/);
    const server = execa('node', [BIN, 'repo', 'serve', '--repo', repo, '--listen', '127.0.0.1:0'], { reject: false, buffer: { stdout: false } });
    try {
      const uri = await new Promise<string>((resolve, reject) => {
        server.stdout!.on('data', (chunk: Buffer) => {
          const match = /at (nbd:\/\/\S+)/.exec(chunk.toString());
          if (match) resolve(match[1]!);
        });
        setTimeout(() => reject(new Error('no URI printed')), 10000);
      });
      const { stdout } = await execa('nbdinfo', ['--list', uri]);
      t.regex(stdout, /export="alpha@1"/);
      server.kill('SIGTERM');
      t.is((await server).exitCode, 0);
    } finally {
      server.kill('SIGKILL');
    }
  }));

test('kill -9 during an import leaves a consistent repository; importing again works', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const file = await writeDisk(join(dir, 'big.raw'), randomBytes(96 * MiB));
    const importing = execa('node', [BIN, 'image', 'import', file, 'big', '--repo', repo], { reject: false });
    try {
      // Wait until blocks are being appended to a pack, then pull the plug.
      for (let i = 0; i < 400; i++) {
        const packs = await readdir(join(repo, 'packs')).catch(() => [] as string[]);
        if (packs.some((f) => f.endsWith('.pack'))) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      importing.kill('SIGKILL');
      await importing;
    } finally {
      importing.kill('SIGKILL');
    }
    const ls = await lazyboot(['image', 'ls', '--repo', repo]);
    t.is(ls.exitCode, 0, ls.stderr);
    t.regex(ls.stdout, /no images|big@1/, 'either nothing or the whole image is visible');
    const again = await lazyboot(['image', 'import', file, 'big', '--repo', repo]);
    t.is(again.exitCode, 0, again.stderr);
    const info = await lazyboot(['image', 'info', 'big', '--verify', '--repo', repo]);
    t.is(info.exitCode, 0, info.stderr);
    t.regex(info.stdout, /all blocks present and verified/);
    const out = join(dir, 'out.raw');
    await lazyboot(['image', 'export', 'big', out, '--repo', repo]);
    t.is((await execa('cmp', [file, out], { reject: false })).exitCode, 0);
  }));

test('repo serve defaults to $XDG_RUNTIME_DIR/lazyboot/repo.sock', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    await lazyboot(['image', 'import', await writeDisk(join(dir, 'disk.raw'), sampleDisk()), 'alpha', '--repo', repo]);
    const runtime = join(dir, 'run');
    const server = execa('node', [BIN, 'repo', 'serve', '--repo', repo], { reject: false, buffer: { stdout: false }, env: { XDG_RUNTIME_DIR: runtime } });
    try {
      const uri = await new Promise<string>((resolve, reject) => {
        server.stdout!.on('data', (chunk: Buffer) => {
          const match = /at (nbd\+unix:\S+)/.exec(chunk.toString());
          if (match) resolve(match[1]!);
        });
        setTimeout(() => reject(new Error('no URI printed')), 10000);
      });
      t.is(uri, `nbd+unix:///?socket=${join(runtime, 'lazyboot', 'repo.sock')}`);
      server.kill('SIGINT');
      t.is((await server).exitCode, 0);
    } finally {
      server.kill('SIGKILL');
    }
  }));
