// A damaged repository: each kind of damage stays local to what it damages (the other images
// list, import, export and serve), and `repo check` names it; --repair removes only what nothing
// refers to. Also: the marker is checked, files are 0600 under any umask, names agree with yargs.
import test, { type ExecutionContext } from 'ava';
import { execa } from 'execa';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { BIN, lazyboot, inTempDir, oneLine, serveRepositoryCli } from './helpers/repo-cli.js';
import { flipBit, packsEndingWith } from './helpers/repo-damage.js';
import { MiB } from './helpers/repo-fixtures.js';

interface TwoImages {
  repo: string;
  /** alpha's blocks are in the first pack, beta's in the second (random data, no sharing). */
  alphaFile: string;
  betaFile: string;
}

async function twoImages(dir: string): Promise<TwoImages> {
  const repo = join(dir, 'repo');
  const alphaFile = join(dir, 'alpha.raw');
  const betaFile = join(dir, 'beta.raw');
  await writeFile(alphaFile, randomBytes(MiB));
  await writeFile(betaFile, randomBytes(MiB));
  for (const [file, name] of [[alphaFile, 'alpha'], [betaFile, 'beta']] as const) {
    const result = await lazyboot(['image', 'import', file, name, '--repo', repo]);
    if (result.exitCode !== 0) throw new Error(result.stderr);
  }
  return { repo, alphaFile, betaFile };
}

/** The undamaged image `name` (from `file`) lists, exports, serves, and a new import works. */
async function stillUsable(t: ExecutionContext, dir: string, repo: string, name: string, file: string): Promise<void> {
  const ls = await lazyboot(['image', 'ls', '--repo', repo]);
  t.is(ls.exitCode, 0, ls.stderr);
  t.regex(ls.stdout, new RegExp(`^${name}@1 `, 'm'));
  const out = join(dir, `${name}.export`);
  const exported = await lazyboot(['image', 'export', name, out, '--repo', repo]);
  t.is(exported.exitCode, 0, exported.stderr);
  t.true((await readFile(out)).equals(await readFile(file)), 'export is byte for byte');
  const server = await serveRepositoryCli(repo, join(dir, 'serve.sock'));
  try {
    const copy = join(dir, `${name}.nbdcopy`);
    await execa('nbdcopy', [`nbd+unix:///${name}?socket=${server.socket}`, copy]);
    t.true((await readFile(copy)).equals(await readFile(file)), 'served byte for byte');
  } finally {
    await server.stop();
  }
  const fresh = join(dir, 'fresh.raw');
  await writeFile(fresh, randomBytes(256 * 1024));
  const imported = await lazyboot(['image', 'import', fresh, 'fresh', '--repo', repo]);
  t.is(imported.exitCode, 0, imported.stderr);
}

/** `repo check` exits 1 and names `file` with a problem matching `problem`. */
async function checkNames(t: ExecutionContext, repo: string, file: string, problem: RegExp): Promise<void> {
  const check = await lazyboot(['repo', 'check', '--repo', repo]);
  t.is(check.exitCode, 1, check.stdout);
  t.true(oneLine(check.stderr), check.stderr);
  const line = check.stdout.split('\n').find((l) => l.startsWith(`${file}: `));
  t.truthy(line, `${file} named in:\n${check.stdout}`);
  t.regex(line ?? '', problem);
}

test('a damaged index: other images stay usable, ls notes it, check names it', (t) =>
  inTempDir(async (dir) => {
    const { repo, betaFile } = await twoImages(dir);
    const [alphaIndex] = await packsEndingWith(repo, '.idx');
    await flipBit(alphaIndex!, 50);
    const ls = await lazyboot(['image', 'ls', '--repo', repo]);
    t.regex(ls.stderr, new RegExp(`note: skipped ${alphaIndex}: it fails its checksum`));
    await stillUsable(t, dir, repo, 'beta', betaFile);
    const alpha = await lazyboot(['image', 'export', 'alpha', join(dir, 'a.out'), '--repo', repo]);
    t.is(alpha.exitCode, 1);
    t.true(oneLine(alpha.stderr), alpha.stderr);
    await checkNames(t, repo, alphaIndex!, /fails its checksum; the blocks of its pack are unreachable/);
  }));

test('a damaged manifest: ls shows the rest with a note, info names the file, check names it', (t) =>
  inTempDir(async (dir) => {
    const { repo, betaFile } = await twoImages(dir);
    const manifest = join(repo, 'manifests', 'alpha', '1.manifest');
    await flipBit(manifest, 20);
    const ls = await lazyboot(['image', 'ls', '--repo', repo]);
    t.is(ls.exitCode, 0);
    t.regex(ls.stderr, new RegExp(`note: skipped ${manifest}: it does not decode`));
    t.notRegex(ls.stdout, /alpha/);
    const info = await lazyboot(['image', 'info', 'alpha', '--repo', repo]);
    t.is(info.exitCode, 1);
    t.true(oneLine(info.stderr), info.stderr);
    t.true(info.stderr.includes(manifest), info.stderr);
    await stillUsable(t, dir, repo, 'beta', betaFile);
    // Served: the client is refused with the file's name, and the server logs it; no garbage manifest.
    const server = await serveRepositoryCli(repo, join(dir, 'manifest.sock'));
    try {
      const info = await execa('qemu-img', ['info', `nbd+unix:///alpha?socket=${server.socket}`], { reject: false });
      t.not(info.exitCode, 0);
      t.true(info.stderr.includes(manifest), info.stderr);
      const raw = await execa('nbdcopy', [`nbd+unix:///manifest:alpha?socket=${server.socket}`, join(dir, 'm.out')], { reject: false });
      t.not(raw.exitCode, 0, 'a damaged manifest is not served as manifest:alpha');
      t.regex(server.stderr(), new RegExp(`export "alpha" cannot be opened: repository file ${manifest} does not decode`));
    } finally {
      await server.stop();
    }
    await checkNames(t, repo, manifest, /does not decode \(invalid image manifest: checksum mismatch\)/);
  }));

test('stray files and directories under packs/ and manifests/ take nothing offline; check names each', (t) =>
  inTempDir(async (dir) => {
    const { repo, alphaFile } = await twoImages(dir);
    const strays = [join(repo, 'packs', 'notes.txt'), join(repo, 'manifests', 'README')];
    for (const file of strays) await writeFile(file, 'hello');
    const strayDirs = [join(repo, 'packs', 'old.idx'), join(repo, 'manifests', '.hidden-but-fine'), join(repo, 'manifests', 'not valid')];
    for (const path of strayDirs) await mkdir(path);
    await stillUsable(t, dir, repo, 'alpha', alphaFile);
    for (const file of strays) await checkNames(t, repo, file, /does not belong in (packs|manifests)\//);
    await checkNames(t, repo, join(repo, 'packs', 'old.idx'), /is not a regular file/);
    // Importing under the stray file's name: one line saying what is in the way.
    const blocked = await lazyboot(['image', 'import', alphaFile, 'README', '--repo', repo]);
    t.is(blocked.exitCode, 1);
    t.true(oneLine(blocked.stderr), blocked.stderr);
    t.regex(blocked.stderr, /manifests\/README is in the way .*: move it out of the repository/);
    await checkNames(t, repo, join(repo, 'manifests', 'not valid'), /is not a valid image name/);
  }));

test('a pack whose blocks were lost (index lists more than the pack holds) is named; the other image is fine', (t) =>
  inTempDir(async (dir) => {
    const { repo, betaFile } = await twoImages(dir);
    const [alphaPack] = await packsEndingWith(repo, '.pack');
    await execa('truncate', ['-s', '100000', alphaPack!]);
    await stillUsable(t, dir, repo, 'beta', betaFile);
    const [alphaIndex] = await packsEndingWith(repo, '.idx');
    await checkNames(t, repo, alphaIndex!, /needs .* to hold 1048576 bytes, but it has 100000 \(truncated\)/);
    await checkNames(t, repo, join(repo, 'manifests', 'alpha', '1.manifest'), /refers to 15 block\(s\) that are missing or damaged/);
  }));

test('check --repair removes orphan packs and temp files of dead writers, nothing referenced, then exits 0', (t) =>
  inTempDir(async (dir) => {
    const { repo, alphaFile, betaFile } = await twoImages(dir);
    const exited = execa('true');
    const dead = exited.pid!;
    await exited;
    const orphan = join(repo, 'packs', `pack-0123456789ab-${dead}-deadbeef.pack`);
    const temps = [join(repo, 'packs', `.tmp-${dead}-0123456789ab`), join(repo, 'manifests', 'alpha', `.tmp-${dead}-0123456789ab`)];
    const live = join(repo, 'packs', `pack-0123456789ab-${process.pid}-cafef00d.pack`);
    for (const file of [orphan, ...temps, live]) await writeFile(file, randomBytes(4096), { mode: 0o600 });
    const before = await lazyboot(['repo', 'check', '--repo', repo]);
    t.is(before.exitCode, 1);
    t.regex(before.stdout, new RegExp(`${orphan}: pack without an index, left by an interrupted write \\(process ${dead} is gone\\).*--repair fixes this`));
    t.false(before.stdout.includes(live), 'a pack being written by a live process is not damage');
    const repaired = await lazyboot(['repo', 'check', '--repair', '--repo', repo]);
    t.is(repaired.exitCode, 0, repaired.stdout + repaired.stderr);
    t.regex(repaired.stdout, /3 problem\(s\), 3 repaired/);
    const packs = await readdir(join(repo, 'packs'));
    t.false(packs.includes(`pack-0123456789ab-${dead}-deadbeef.pack`));
    t.true(packs.includes(`pack-0123456789ab-${process.pid}-cafef00d.pack`));
    t.is(packs.filter((name) => name.endsWith('.idx')).length, 2, 'referenced packs and indexes stay');
    for (const [name, file] of [['alpha', alphaFile], ['beta', betaFile]] as const) {
      const info = await lazyboot(['image', 'info', name, '--verify', '--repo', repo]);
      t.is(info.exitCode, 0, info.stderr);
      t.regex(info.stdout, /all blocks present and verified/);
      t.is((await stat(file)).size, MiB);
    }
  }));

test('a flipped bit in a pack: check --verify names the pack, offset and the image that uses it; the other image is fine', (t) =>
  inTempDir(async (dir) => {
    const { repo, betaFile } = await twoImages(dir);
    const [alphaPack] = await packsEndingWith(repo, '.pack');
    const [alphaIndex] = await packsEndingWith(repo, '.idx');
    await flipBit(alphaPack!, 5 * 65536 + 3);
    t.is((await lazyboot(['repo', 'check', '--repo', repo])).exitCode, 0, 'without --verify, blocks are not read');
    const check = await lazyboot(['repo', 'check', '--verify', '--repo', repo]);
    t.is(check.exitCode, 1);
    t.regex(check.stdout, new RegExp(`^${alphaIndex}: lists 1 block\\(s\\) of \\S+\\.pack that fail their SHA-256 \\(first at offset ${5 * 65536}\\)`, 'm'));
    t.regex(check.stdout, /manifests\/alpha\/1\.manifest: refers to 1 block\(s\) that are missing or damaged \(first: block 5,/);
    t.notRegex(check.stdout, /beta/);
    await stillUsable(t, dir, repo, 'beta', betaFile);
  }));

test('check --repair keeps a pack whose index was lost while a manifest misses blocks (they may be in it)', (t) =>
  inTempDir(async (dir) => {
    const { repo, betaFile } = await twoImages(dir);
    const [alphaPack] = await packsEndingWith(repo, '.pack');
    const [alphaIndex] = await packsEndingWith(repo, '.idx');
    await rm(alphaIndex!);
    const repaired = await lazyboot(['repo', 'check', '--repair', '--repo', repo]);
    t.is(repaired.exitCode, 1);
    t.regex(repaired.stdout, new RegExp(`^${alphaPack}: pack without an index; kept, because 1 manifest\\(s\\) refer to blocks no index lists`, 'm'));
    t.regex(repaired.stdout, /manifests\/alpha\/1\.manifest: refers to 16 block\(s\) that are missing or damaged/);
    t.true((await packsEndingWith(repo, '.pack')).includes(alphaPack!), 'the pack is still there');
    await stillUsable(t, dir, repo, 'beta', betaFile);
  }));

test('a clean repository checks clean with exit 0', (t) =>
  inTempDir(async (dir) => {
    const { repo } = await twoImages(dir);
    const check = await lazyboot(['repo', 'check', '--verify', '--repo', repo]);
    t.is(check.exitCode, 0, check.stdout + check.stderr);
    t.regex(check.stdout, /2 image\(s\), 2 pack\(s\); 0 problem\(s\)$/m);
  }));

test('the marker is read: a foreign, damaged or newer-format directory is refused; import creates only in an empty or new one', (t) =>
  inTempDir(async (dir) => {
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, randomBytes(64 * 1024));
    const other = join(dir, 'other');
    await mkdir(other);
    await writeFile(join(other, 'thesis.tex'), 'mine');
    const cases: Array<[string[], RegExp]> = [
      [['image', 'ls', '--repo', other], /other is not a lazyboot repository \(it holds other files and no lazyboot-repository marker\): pass --repo/],
      [['image', 'import', disk, 'x', '--repo', other], /other is not a lazyboot repository \(it holds other files/],
      [['image', 'ls', '--repo', join(dir, 'absent')], /absent is not a lazyboot repository \(it does not exist\): import an image into it first/],
      [['repo', 'serve', '--repo', join(dir, 'absent'), '--socket', join(dir, 's.sock')], /absent is not a lazyboot repository \(it does not exist\)/],
      [['repo', 'check', '--repo', disk], /disk\.raw is not a lazyboot repository \(it is a file, not a directory\)/],
    ];
    for (const [args, pattern] of cases) {
      const result = await lazyboot(args);
      t.is(result.exitCode, 1, args.join(' '));
      t.true(oneLine(result.stderr), result.stderr);
      t.regex(result.stderr, pattern);
    }
    t.deepEqual(await readdir(other), ['thesis.tex'], 'nothing was added to a foreign directory');
    const repo = join(dir, 'repo');
    await mkdir(repo);
    t.is((await lazyboot(['image', 'import', disk, 'x', '--repo', repo])).exitCode, 0, 'an empty directory becomes a repository');
    for (const [text, pattern] of [
      ['lazyboot image repository, format 2\n', /is a repository of format 2; this lazyboot reads format 1/],
      ['something else\n', /its lazyboot-repository marker is damaged or not lazyboot's/],
    ] as const) {
      await writeFile(join(repo, 'lazyboot-repository'), text);
      for (const args of [['image', 'ls'], ['image', 'import', disk, 'y']]) {
        const result = await lazyboot([...args, '--repo', repo]);
        t.is(result.exitCode, 1);
        t.true(oneLine(result.stderr), result.stderr);
        t.regex(result.stderr, pattern);
      }
    }
  }));

test('under umask 000, repository files are 0600 and directories 0700', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'data', 'repo');
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, randomBytes(MiB));
    const run = (args: string[]) => execa('sh', ['-c', 'umask 000 && exec node "$@"', 'sh', BIN, ...args], { reject: false });
    t.is((await run(['image', 'import', disk, 'alpha', '--repo', repo])).exitCode, 0);
    t.is((await run(['image', 'import', disk, 'beta', '--repo', repo])).exitCode, 0);
    const out = join(dir, 'out.raw');
    t.is((await run(['image', 'export', 'alpha', out, '--repo', repo])).exitCode, 0);
    t.is((await stat(out)).mode & 0o777, 0o600, 'exported file');
    const modes: string[] = [];
    const walk = async (path: string): Promise<void> => {
      const info = await stat(path);
      modes.push(`${path.slice(dir.length)} ${(info.mode & 0o777).toString(8)}`);
      if (info.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
    };
    await walk(join(dir, 'data'));
    t.true(modes.length >= 9, modes.join('\n'));
    for (const line of modes) t.regex(line, / (600|700)$/, line);
    for (const line of modes.filter((l) => l.endsWith('.pack') || l.endsWith('.idx') || l.endsWith('.manifest') || l.includes('lazyboot-repository'))) t.regex(line, / 600$/);
  }));

test('names starting with "-" (or any non-alphanumeric) are refused however they are typed', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, randomBytes(64 * 1024));
    for (const name of ['_x', '.x', '+x']) {
      const result = await lazyboot(['image', 'import', '--repo', repo, disk, name]);
      t.is(result.exitCode, 1, name);
      t.true(oneLine(result.stderr), result.stderr);
      t.regex(result.stderr, /invalid image name ".*" \(does not start with a letter or digit\): start with a letter or digit/);
    }
    // yargs takes these as options, never as a name: the rules say no name can start with "-".
    for (const args of [[disk, '-x'], [disk, '--', '-x'], [disk, '--x']]) {
      const result = await lazyboot(['image', 'import', '--repo', repo, ...args]);
      t.not(result.exitCode, 0, args.join(' '));
    }
    t.deepEqual(await readdir(join(repo, 'manifests')).catch(() => []), []);
  }));

test('an index offset near 2^64 is reported as an exact integer', (t) =>
  inTempDir(async (dir) => {
    const { repo, betaFile } = await twoImages(dir);
    // A well-formed index (valid checksum) whose one entry lies at 2^64 - 1.
    const body = Buffer.alloc(8 + 4 + 44);
    body.write('LZBIDX01', 0, 'latin1');
    body.writeUInt32BE(1, 8);
    randomBytes(32).copy(body, 12);
    body.writeBigUInt64BE(2n ** 64n - 1n, 44);
    body.writeUInt32BE(65536, 52);
    const index = join(repo, 'packs', `pack-0123456789ab-1-00000000.idx`);
    await writeFile(index, Buffer.concat([body, createHash('sha256').update(body).digest()]));
    await writeFile(index.replace(/\.idx$/, '.pack'), '');
    await checkNames(t, repo, index, /has entry 0 at offset 18446744073709551615, beyond 2\^53/);
    await stillUsable(t, dir, repo, 'beta', betaFile);
  }));
