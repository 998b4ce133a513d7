// The repository on real files: import, versions, dedup, durable layout, and clear errors for damage.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, truncate, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../lib/repo/repository.js';
import { BlockCorrupt, BlockMissing, InvalidImageName, RepositoryCorrupt, UnknownImage, InvalidBlockSize } from '../lib/repo/errors.js';
import { ZERO_DIGEST, digestOf } from '../lib/repo/manifest-format.js';
import { importFile, sampleDisk, writeDisk, KiB, MiB } from './helpers/repo-fixtures.js';

const withRepo = <T>(body: (repo: Repository, dir: string) => Promise<T>) =>
  withDir(async ({ path }) => {
    const repo = await Repository.open(join(path, 'repo'));
    try {
      return await body(repo, path);
    } finally {
      await repo.close();
    }
  }, { unsafeCleanup: true });

async function packFiles(repo: Repository): Promise<string[]> {
  return (await readdir(join(repo.dir, 'packs'))).sort();
}

test('defaultDir follows XDG_DATA_HOME', (t) => {
  const saved = process.env.XDG_DATA_HOME;
  process.env.XDG_DATA_HOME = '/x/data';
  try {
    t.is(Repository.defaultDir(), '/x/data/lazyboot/repo');
  } finally {
    if (saved === undefined) delete process.env.XDG_DATA_HOME;
    else process.env.XDG_DATA_HOME = saved;
  }
});

test('an import reads back byte for byte, block by block and through the image backend', (t) =>
  withRepo(async (repo, dir) => {
    const disk = sampleDisk();
    const result = await importFile(repo, await writeDisk(join(dir, 'a.raw'), disk), 'alpha');
    t.is(result.ref, 'alpha@1');
    t.is(result.manifest.size, disk.length);
    t.is(result.manifest.blockCount, Math.ceil(disk.length / (64 * KiB)));
    t.is(result.zeroBlocks, 16); // the 1 MiB zero region
    const backend = repo.imageBackend(await repo.resolve('alpha'));
    t.true((await backend.read(0, disk.length)).equals(disk));
    t.true((await backend.read(12345, 300000)).equals(disk.subarray(12345, 312345)));
    const last = result.manifest.blockCount - 1;
    const lastBlock = await repo.readBlock(digestOf(result.manifest, last), disk.length - last * 64 * KiB);
    t.true(lastBlock.equals(disk.subarray(last * 64 * KiB)));
    t.true((await repo.readBlock(ZERO_DIGEST, 4096)).equals(Buffer.alloc(4096)));
    const extents = await backend.blockStatus(0, disk.length);
    t.deepEqual(extents.map((e) => [e.offset, e.length, e.hole]), [[0, MiB, false], [MiB, MiB, true], [2 * MiB, disk.length - 2 * MiB, false]]);
  }));

test('importing the same file twice stores no new block and makes version 2', (t) =>
  withRepo(async (repo, dir) => {
    const file = await writeDisk(join(dir, 'a.raw'), sampleDisk());
    const first = await importFile(repo, file, 'alpha');
    const packsBefore = await packFiles(repo);
    const second = await importFile(repo, file, 'alpha');
    t.is(second.ref, 'alpha@2');
    t.is(second.newBlocks, 0);
    t.is(second.bytesStored, 0);
    t.is(second.presentBlocks, first.newBlocks + first.presentBlocks);
    t.deepEqual(await packFiles(repo), packsBefore, 'no pack was added');
    t.is((await repo.resolve('alpha')).version, 2);
    t.is((await repo.resolve('alpha@1')).version, 1);
  }));

test('an image differing in one block stores exactly one new block; two images share blocks', (t) =>
  withRepo(async (repo, dir) => {
    const disk = sampleDisk();
    await importFile(repo, await writeDisk(join(dir, 'a.raw'), disk), 'alpha');
    const changed = Buffer.from(disk);
    randomBytes(64 * KiB).copy(changed, 5 * 64 * KiB);
    const other = await importFile(repo, await writeDisk(join(dir, 'b.raw'), changed), 'beta');
    t.is(other.newBlocks, 1);
    t.is(other.bytesStored, 64 * KiB);
    const a = await repo.resolve('alpha');
    const b = await repo.resolve('beta');
    t.true(digestOf(a, 0).equals(digestOf(b, 0)), 'block 0 is shared');
    t.false(digestOf(a, 5).equals(digestOf(b, 5)));
    t.true((await repo.imageBackend(b).read(0, changed.length)).equals(changed));
    t.deepEqual((await repo.list()).map((i) => `${i.name}@${i.version}`), ['alpha@1', 'beta@1']);
  }));

test('identical blocks inside one image are stored once; block sizes from 4K to 4M work', (t) =>
  withRepo(async (repo, dir) => {
    const block = randomBytes(4 * KiB);
    const disk = Buffer.concat(Array.from({ length: 16 }, () => block));
    const file = await writeDisk(join(dir, 'same.raw'), disk);
    const small = await importFile(repo, file, 'same', 4 * KiB);
    t.is(small.newBlocks, 1);
    t.is(small.presentBlocks, 15);
    const big = await importFile(repo, file, 'big', 4 * MiB);
    t.is(big.manifest.blockCount, 1);
    t.true((await repo.imageBackend(big.manifest).read(0, disk.length)).equals(disk));
  }));

test('names and refs are validated; unknown images are a typed error', (t) =>
  withRepo(async (repo, dir) => {
    const file = await writeDisk(join(dir, 'a.raw'), randomBytes(8192));
    for (const bad of ['a/b', '..', 'x..y', 'a:b', 'a@b', '', '.hidden', 'x'.repeat(129), 'sp ace']) {
      await t.throwsAsync(importFile(repo, file, bad), { instanceOf: InvalidImageName }, bad);
    }
    await t.throwsAsync(repo.resolve('nothing'), { instanceOf: UnknownImage });
    await importFile(repo, file, 'ok');
    await t.throwsAsync(repo.resolve('ok@2'), { instanceOf: UnknownImage });
    await t.throwsAsync(repo.resolve('ok@zero'), { instanceOf: InvalidImageName });
    await t.throwsAsync(importFile(repo, file, 'ok', 3000), { instanceOf: InvalidBlockSize });
  }));

test('a failed import leaves no visible block, pack or manifest', (t) =>
  withRepo(async (repo) => {
    async function* shortSource() {
      yield randomBytes(100 * KiB);
    }
    await t.throwsAsync(repo.importImage('short', shortSource(), { size: MiB }), { message: /yielded 102400 bytes, expected 1048576/ });
    t.deepEqual(await packFiles(repo), []);
    t.deepEqual(await repo.list(), []);
  }));

test('the layout is packs + indexes + manifests, with no temp files left behind', (t) =>
  withRepo(async (repo, dir) => {
    await importFile(repo, await writeDisk(join(dir, 'a.raw'), sampleDisk()), 'alpha');
    const packs = await packFiles(repo);
    t.is(packs.length, 2);
    t.regex(packs[0]!, /^pack-.*\.idx$/);
    t.regex(packs[1]!, /^pack-.*\.pack$/);
    t.deepEqual(await readdir(join(repo.dir, 'manifests', 'alpha')), ['1.manifest']);
    t.true((await repo.manifestBytes('alpha')).equals(await readFile(join(repo.dir, 'manifests', 'alpha', '1.manifest'))));
    // A second process opening the same directory sees the same image.
    const again = await Repository.open(repo.dir);
    t.is((await again.resolve('alpha')).size, sampleDisk().length);
    await again.close();
  }));

test('a missing pack file is an error naming the file, on read and in checkImage', (t) =>
  withRepo(async (repo, dir) => {
    const result = await importFile(repo, await writeDisk(join(dir, 'a.raw'), sampleDisk()), 'alpha');
    const pack = (await packFiles(repo)).find((f) => f.endsWith('.pack'))!;
    await rm(join(repo.dir, 'packs', pack));
    const fresh = await Repository.open(repo.dir);
    try {
      const error = await t.throwsAsync(fresh.readBlock(digestOf(result.manifest, 0)), { instanceOf: RepositoryCorrupt });
      t.true(error!.message.includes(pack) && error!.message.includes('missing'), error!.message);
      const check = await fresh.checkImage(result.manifest);
      t.true(check.problems.length > 0 && check.problems[0]!.includes(pack));
      await t.throwsAsync(fresh.imageBackend(result.manifest).read(0, 4096), { message: new RegExp(pack) });
    } finally {
      await fresh.close();
    }
  }));

test('corrupt block data, a truncated pack, a damaged index and a damaged manifest are each named', (t) =>
  withRepo(async (repo, dir) => {
    const result = await importFile(repo, await writeDisk(join(dir, 'a.raw'), sampleDisk()), 'alpha');
    const packs = await packFiles(repo);
    const packPath = join(repo.dir, 'packs', packs.find((f) => f.endsWith('.pack'))!);
    const indexPath = join(repo.dir, 'packs', packs.find((f) => f.endsWith('.idx'))!);
    // Flip a byte of block 0.
    const handle = await open(packPath, 'r+');
    await handle.write(Buffer.from([0xff ^ (await readFile(packPath))[10]!]), 0, 1, 10);
    await handle.close();
    const corrupt = await t.throwsAsync(repo.readBlock(digestOf(result.manifest, 0)), { instanceOf: BlockCorrupt });
    t.true(corrupt!.message.includes(packPath));
    t.true((await repo.checkImage(result.manifest, { verify: true })).problems.some((p) => p.includes('corrupt')));
    await t.throwsAsync(repo.imageBackend(result.manifest, { verify: true }).read(0, 64 * KiB), { message: /corrupt/ });
    // Truncate the pack: the last stored block is gone.
    await truncate(packPath, 100);
    const lastStored = result.manifest.blockCount - 1;
    const truncated = await t.throwsAsync(repo.readBlock(digestOf(result.manifest, lastStored)), { instanceOf: RepositoryCorrupt });
    t.regex(truncated!.message, /truncated/);
    // A damaged index is skipped and named; its blocks are missing, the repository still opens.
    await writeFile(indexPath, randomBytes(100));
    const withBadIndex = await Repository.open(repo.dir);
    t.deepEqual((await withBadIndex.listWithDamage()).damage, [{ file: indexPath, problem: 'has a wrong magic or is too short' }]);
    const missing = await t.throwsAsync(withBadIndex.readBlock(digestOf(result.manifest, 0)), { instanceOf: BlockMissing });
    t.regex(missing!.message, /1 index could not be loaded/);
    await withBadIndex.close();
    await rm(indexPath);
    const reopened = await Repository.open(repo.dir);
    await t.throwsAsync(reopened.readBlock(digestOf(result.manifest, 0)), { instanceOf: BlockMissing });
    // A damaged manifest.
    const manifestPath = join(repo.dir, 'manifests', 'alpha', '1.manifest');
    await writeFile(manifestPath, 'not a manifest');
    const badManifest = await t.throwsAsync(reopened.resolve('alpha'), { instanceOf: RepositoryCorrupt });
    t.true(badManifest!.message.includes(manifestPath));
    await reopened.close();
  }));

test('commitImage builds a new version from blocks and refuses digests it does not hold', (t) =>
  withRepo(async (repo, dir) => {
    const base = await importFile(repo, await writeDisk(join(dir, 'a.raw'), sampleDisk()), 'alpha');
    const batch = repo.beginBlocks();
    const changed = randomBytes(64 * KiB);
    const put = await batch.put(changed);
    t.is(put.outcome, 'new');
    const digests = Buffer.from(base.manifest.digests);
    put.digest.copy(digests, 3 * 32);
    const next = await repo.commitImage({ name: 'alpha', size: base.manifest.size, blockSize: 64 * KiB, digests, parent: base.ref }, batch);
    t.is(next.version, 2);
    t.is(next.parent, 'alpha@1');
    t.true((await repo.imageBackend(next).read(3 * 64 * KiB, 64 * KiB)).equals(changed));
    const unknown = Buffer.from(digests);
    randomBytes(32).copy(unknown, 0);
    await t.throwsAsync(repo.commitImage({ name: 'alpha', size: base.manifest.size, blockSize: 64 * KiB, digests: unknown }), { instanceOf: BlockMissing });
  }));

test('concurrent imports of one name get distinct versions, both complete', (t) =>
  withRepo(async (repo, dir) => {
    const a = await writeDisk(join(dir, 'a.raw'), sampleDisk());
    const b = await writeDisk(join(dir, 'b.raw'), sampleDisk());
    const other = await Repository.open(repo.dir); // as if a second process
    try {
      const results = await Promise.all([importFile(repo, a, 'same'), importFile(other, b, 'same')]);
      t.deepEqual(results.map((r) => r.manifest.version).sort(), [1, 2]);
      for (const result of results) {
        const manifest = await repo.resolve(result.ref);
        t.true((await repo.checkImage(manifest, { verify: true })).problems.length === 0);
      }
    } finally {
      await other.close();
    }
  }));

test('offsets near 2^64 are printed as exact integers in range errors', (t) =>
  withRepo(async (repo, dir) => {
    await importFile(repo, await writeDisk(join(dir, 'a.raw'), sampleDisk()), 'alpha');
    const backend = repo.imageBackend(await repo.resolve('alpha'));
    const error = await t.throwsAsync(backend.read(2 ** 64 - 4096, 4096));
    t.regex(error!.message, /^range 18446744073709547520\+4096 is outside the image/);
  }));
