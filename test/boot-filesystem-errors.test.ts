// `boot` and `run` when the file system says no: a --disk on a full file system, and a --disk in a
// directory the user may not write. Each is one line (what is wrong, what to do), exit 1 (125 for
// `run`: a failure of lazyboot itself, not of the command), and
// nothing left behind — not "unexpected error: ENOSPC: no space left on device, write".
import { chmod, chown, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { withDir } from 'tmp-promise';
import { makeImage } from './cor-fixtures.js';
import { CLI } from './boot-support.js';

const NOBODY = 65534;

test('boot with --disk on a full file system: one line naming the place and saying to free space; no disk left', (t) => withDir(async ({ path: dir }) => {
  await makeImage(dir, 'demo', { size: 8 * 65536 });
  const full = join(dir, 'full');
  await mkdir(full);
  // A 64 KiB tmpfs filled to the last block: the disk (sparse) can be created, its map cannot.
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', full]);
  try {
    await execa('dd', ['if=/dev/zero', `of=${join(full, 'filler')}`, 'bs=4k', 'count=64'], { reject: false });
    const disk = join(full, 'disk.raw');
    const result = await execa('node', [CLI, 'boot', 'demo', '--from', join(dir, 'repo'), '--disk', disk, '--timeout', '60s'], { reject: false });
    t.is(result.exitCode, 1, result.stderr);
    const lines = result.stderr.trim().split('\n');
    t.is(lines.length, 1, result.stderr);
    t.is(lines[0], `lazyboot: cannot write ${disk} (or its map): no space left on the file system (ENOSPC): free space on the file system that holds ${full}, or use a place with room`);
    t.deepEqual(await readdir(full), ['filler'], 'the disk created before the map failed is removed');
  } finally {
    await execa('umount', [full]);
  }
}, { unsafeCleanup: true }));

test('run with --disk in a directory the user may not write: one line naming it and saying to check permissions', (t) => withDir(async ({ path: dir }) => {
  // The user is nobody: it may read the repository (its own) but not write `locked` (root's, 0755).
  await chmod(dir, 0o755);
  await makeImage(dir, 'demo', { size: 8 * 65536 });
  await execa('chown', ['-R', `${NOBODY}:${NOBODY}`, join(dir, 'repo')]);
  const home = join(dir, 'home');
  await mkdir(home);
  await chown(home, NOBODY, NOBODY);
  const locked = join(dir, 'locked');
  await mkdir(locked, { mode: 0o755 });
  const disk = join(locked, 'disk.raw');
  const result = await execa(
    'setpriv',
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'node', CLI, 'run', 'demo', '--from', join(dir, 'repo'), '--disk', disk, '--timeout', '60s', '--', '/bin/true'],
    { env: { HOME: home, TMPDIR: home, XDG_DATA_HOME: home }, reject: false },
  );
  // `run` exits 125 when lazyboot itself fails (docker run's convention; lib/cli/run-exit-codes.ts).
  t.is(result.exitCode, 125, result.stderr);
  t.is(result.stderr.trim(), `lazyboot: cannot open ${disk}: permission denied (EACCES): check the owner and permissions of ${disk} and of ${locked} (or run as the user who owns them)`);
  t.deepEqual(await readdir(locked), []);
  t.deepEqual(await readdir(home), [], 'no run directory or socket left');
}, { unsafeCleanup: true }));
