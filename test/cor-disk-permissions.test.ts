// The local disk and its map hold the guest's data: created 0600 whatever the umask.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { makeImage } from './cor-fixtures.js';
import { serveDisk } from './helpers/disk-serve.js';

test('under umask 000 the disk and its map are created 0600', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * 65536 });
  const disk = join(dir, 'disk.raw');
  const served = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir], { shell: 'umask 000' });
  if (!served.serving) return t.fail(served.stderr);
  await served.stop();
  t.is((await stat(disk)).mode & 0o777, 0o600);
  t.is((await stat(`${disk}.map`)).mode & 0o777, 0o600);
}, { unsafeCleanup: true }));
