// Manifests go through the host-wide block cache too (lib/fetch/nbd-source.ts): a second device
// of an image on one host asks a real `lazyboot repo serve` only for the one-line digest of the
// manifest (`manifest:REF/sha256`), not for the manifest, which is ~32 bytes per block (2 MiB for
// a 4 GiB image at 64 KiB blocks) and would cross the link once per boot. A new version is still
// seen at once (the line names the version), and a damaged cached manifest is fetched again.
import test from 'ava';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { withDir } from 'tmp-promise';
import { openCorDevice } from '../lib/cor/device.js';
import { Repository } from '../lib/repo/repository.js';
import { makeImage, mixedContent, startRepoServer } from './cor-fixtures.js';
import { NbdCountingProxy } from './helpers/nbd-counting-proxy.js';

const BS = 65536;

/** Opens a device of `ref` on a fresh disk through the proxy and the cache, closes it (opening reads the manifest). */
async function bootOnce(dir: string, disk: string, proxy: NbdCountingProxy, cacheDir: string, ref = 'demo') {
  const device = await openCorDevice({ image: ref, disk: join(dir, disk), from: [proxy.uri], cache: { dir: cacheDir, maxBytes: 1 << 30 } });
  try {
    return { manifest: device.manifest };
  } finally {
    await device.close();
  }
}

/** Bytes the proxy saw asked for in READs of each export, manifest exports only. */
function manifestReads(proxy: NbdCountingProxy): Map<string, number> {
  const reads = new Map<string, number>();
  for (const read of proxy.reads) if (read.exportName.startsWith('manifest:')) reads.set(read.exportName, (reads.get(read.exportName) ?? 0) + read.length);
  return reads;
}

test('a second device of an image on one host reads its manifest from the cache: only the digest line crosses the link', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 512 * BS });
  const server = await startRepoServer(image.repoDir, join(dir, 'repo.sock'));
  const proxy = await NbdCountingProxy.start(join(dir, 'proxy.sock'), join(dir, 'repo.sock'));
  const cacheDir = join(dir, 'cache');
  try {
    const first = await bootOnce(dir, 'one.raw', proxy, cacheDir);
    const afterFirst = manifestReads(proxy);
    const manifestLength = (await readFile(join(image.repoDir, 'manifests', 'demo', '1.manifest'))).length;
    t.is(afterFirst.get('manifest:demo@1'), manifestLength, 'the first device fetched the manifest of the exact version');
    t.true((afterFirst.get('manifest:demo/sha256') ?? 0) < 200, 'and the short line that names it');

    const second = await bootOnce(dir, 'two.raw', proxy, cacheDir);
    const afterSecond = manifestReads(proxy);
    const wholeManifestBytes = (reads: Map<string, number>) => [...reads].filter(([name]) => !name.endsWith('/sha256')).reduce((sum, [, bytes]) => sum + bytes, 0);
    t.is(wholeManifestBytes(afterSecond), manifestLength, 'the second device fetched no manifest, under any name');
    t.true((afterSecond.get('manifest:demo/sha256') ?? 0) > (afterFirst.get('manifest:demo/sha256') ?? 0), 'only the line again');
    t.is(second.manifest.version, first.manifest.version);
    t.deepEqual(second.manifest.digests, first.manifest.digests);

    // A new version of the name: the next device sees it at once, fetching only its manifest.
    const repo = await Repository.open(image.repoDir);
    try {
      const content = mixedContent(512 * BS, BS);
      content.fill(7, 0, BS);
      await repo.importImage('demo', (async function* () { yield content; })(), { size: content.length, blockSize: BS });
    } finally {
      await repo.close();
    }
    const third = await bootOnce(dir, 'three.raw', proxy, cacheDir);
    t.is(third.manifest.version, 2);
    t.true((manifestReads(proxy).get('manifest:demo@2') ?? 0) > 0);

    // A damaged manifest in the cache is refused by the cache's own check and fetched again.
    const digest = createHash('sha256').update(await readFile(join(image.repoDir, 'manifests', 'demo', '2.manifest'))).digest('hex');
    const cached = join(cacheDir, 'manifests', digest.slice(0, 2), digest);
    const bytes = await readFile(cached);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(cached, bytes);
    const before = manifestReads(proxy).get('manifest:demo@2') ?? 0;
    const fourth = await bootOnce(dir, 'four.raw', proxy, cacheDir);
    t.is(fourth.manifest.version, 2);
    t.true((manifestReads(proxy).get('manifest:demo@2') ?? 0) > before, 'fetched again after the damaged copy');
    t.deepEqual(await readFile(cached), await readFile(join(image.repoDir, 'manifests', 'demo', '2.manifest')), 'and the cache holds the good copy again');
  } finally {
    await proxy.close();
    await server.kill();
  }
}, { unsafeCleanup: true }));
