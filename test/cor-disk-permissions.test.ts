// The local disk and its map hold the guest's data: created 0600 whatever the umask, and the
// directories the device creates for its socket 0700.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { makeImage } from './cor-fixtures.js';
import { serveDisk } from './helpers/disk-serve.js';

test('under umask 000 the disk and its map are created 0600, the socket directories 0700', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * 65536 });
  const disk = join(dir, 'disk.raw');
  const served = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir], { shell: 'umask 000' });
  if (!served.serving) return t.fail(served.stderr);
  try {
    const socket = /socket=(.+)$/.exec(served.uri)![1]!;
    t.is((await stat(dirname(socket))).mode & 0o777, 0o700, 'the temporary socket directory');
  } finally {
    await served.stop();
  }
  const socket = join(dir, 'new', 'deeper', 'disk.sock');
  const named = await serveDisk(['demo', '--disk', join(dir, 'other.raw'), '--from', image.repoDir, '--socket', socket], { shell: 'umask 000' });
  if (!named.serving) return t.fail(named.stderr);
  await named.stop();
  t.is((await stat(join(dir, 'new'))).mode & 0o777, 0o700);
  t.is((await stat(join(dir, 'new', 'deeper'))).mode & 0o777, 0o700);
  t.is((await stat(disk)).mode & 0o777, 0o600);
  t.is((await stat(`${disk}.map`)).mode & 0o777, 0o600);
}, { unsafeCleanup: true }));
