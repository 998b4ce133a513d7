// A block device as --disk (a loop device, reached through a symlink so that its map lives in the
// test's directory, not in /dev): its size is checked, and its map is bound to it.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { readFile, symlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeImage, nbdcopyTo } from './cor-fixtures.js';
import { serveDisk } from './helpers/disk-serve.js';

const BS = 65536;

/** Attaches `file` to a free loop device; undefined when this machine cannot (not root, no loop). */
async function attachLoop(file: string): Promise<string | undefined> {
  const result = await execa('losetup', ['-f', '--show', file], { reject: false });
  return result.exitCode === 0 ? result.stdout.trim() : undefined;
}

const loopTest = process.getuid?.() === 0 ? test.serial : test.skip;

loopTest('a loop device of the image size serves the image; one of another size, or another device behind the same name, is refused', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 8 * BS });
  const backing = [join(dir, 'a.img'), join(dir, 'b.img'), join(dir, 'small.img')];
  await execa('truncate', ['-s', String(8 * BS), backing[0]!, backing[1]!]);
  await execa('truncate', ['-s', String(4 * BS), backing[2]!]);
  const loops: string[] = [];
  try {
    for (const file of backing) {
      const loop = await attachLoop(file);
      if (!loop) return t.fail(`losetup failed for ${file}`);
      loops.push(loop);
    }
    const disk = join(dir, 'disk');
    await symlink(loops[0]!, disk);
    const served = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir]);
    if (!served.serving) return t.fail(served.stderr);
    try {
      await nbdcopyTo(served.uri, join(dir, 'out.raw'));
    } finally {
      await served.stop();
    }
    t.true((await readFile(join(dir, 'out.raw'))).equals(image.content));

    // The same name now leads to another device of the same size (zeros): the fingerprint differs.
    await rm(disk);
    await symlink(loops[1]!, disk);
    const other = await serveDisk(['demo', '--disk', disk, '--from', image.repoDir]);
    if (other.serving) { await other.stop(); return t.fail('another device was served with this map'); }
    t.regex(other.stderr, /^lazyboot: [^\n]*disk\.map does not describe [^\n]*content differs[^\n]*block 7:\d+[^\n]*\n$/);

    const small = join(dir, 'small');
    await symlink(loops[2]!, small);
    const wrongSize = await serveDisk(['demo', '--disk', small, '--from', image.repoDir]);
    if (wrongSize.serving) { await wrongSize.stop(); return t.fail('a device of another size was served'); }
    t.is(wrongSize.stderr, `lazyboot: ${small} is ${4 * BS} bytes but the image is ${8 * BS} bytes: use another --disk, or delete this one to start over\n`);
  } finally {
    for (const loop of loops) await execa('losetup', ['-d', loop], { reject: false });
  }
}, { unsafeCleanup: true }));
