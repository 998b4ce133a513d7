// `repo serve` verifies each block the first time it serves it: a damaged block is EIO for plain
// NBD clients (which cannot verify) and one log line naming the pack and offset; the rest is served.
import test from 'ava';
import { execa } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { lazyboot, inTempDir, serveRepositoryCli } from './helpers/repo-cli.js';
import { flipBit, packsEndingWith } from './helpers/repo-damage.js';
import { MiB } from './helpers/repo-fixtures.js';

const BLOCK = 64 * 1024;
const DAMAGED_BLOCK = 37;

test('a flipped bit in a pack fails nbdcopy and qemu-img convert, is logged with pack and offset, and other images stay served', (t) =>
  inTempDir(async (dir) => {
    const repo = join(dir, 'repo');
    const alpha = join(dir, 'alpha.raw');
    const beta = join(dir, 'beta.raw');
    await writeFile(alpha, randomBytes(4 * MiB));
    await writeFile(beta, randomBytes(4 * MiB));
    t.is((await lazyboot(['image', 'import', alpha, 'alpha', '--repo', repo])).exitCode, 0);
    t.is((await lazyboot(['image', 'import', beta, 'beta', '--repo', repo])).exitCode, 0);
    // alpha's blocks are in the first pack, in order (random data: no duplicates, no zeros).
    const [alphaPack] = await packsEndingWith(repo, '.pack');
    await flipBit(alphaPack!, DAMAGED_BLOCK * BLOCK + 1000);
    const server = await serveRepositoryCli(repo, join(dir, 'repo.sock'));
    try {
      const uri = (name: string) => `nbd+unix:///${name}?socket=${server.socket}`;
      const copied = await execa('nbdcopy', [uri('alpha'), join(dir, 'alpha.copy')], { reject: false });
      t.not(copied.exitCode, 0, 'nbdcopy fails');
      const converted = await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('alpha'), join(dir, 'alpha.convert')], { reject: false });
      t.not(converted.exitCode, 0, 'qemu-img convert fails');
      const logged = server.stderr().split('\n').filter((line) => line.includes('corrupt'));
      t.true(logged.length > 0 && logged.every((line) => line.includes(`${alphaPack} at offset ${DAMAGED_BLOCK * BLOCK} is corrupt`)), server.stderr());
      // The other image, and alpha's undamaged blocks, are served.
      await execa('nbdcopy', [uri('beta'), join(dir, 'beta.copy')]);
      t.true((await readFile(join(dir, 'beta.copy'))).equals(await readFile(beta)));
      const head = await execa('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0 0 ${BLOCK}`, uri('alpha')], { reject: false });
      t.regex(head.stdout, /Pattern verification failed|read 65536/, 'a read of an undamaged block succeeds');
      t.notRegex(head.stdout + head.stderr, /Input\/output error/);
      const damaged = await execa('qemu-io', ['-r', '-f', 'raw', '-c', `read ${DAMAGED_BLOCK * BLOCK + 4096} 4096`, uri('alpha')], { reject: false });
      t.regex(damaged.stdout + damaged.stderr, /Input\/output error/, 'a partial read of the damaged block is EIO too');
    } finally {
      t.is(await server.stop(), 0);
    }
  }));
