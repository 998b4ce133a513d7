// The host cache's upstream (lib/cache/cached-upstream.ts) keeps runs whole across zero blocks: in a
// partly cached read, the blocks still to fetch that are separated only by all-zero blocks go to
// the repository as one request (the zeros read along, as the copy-on-read device does), while a
// cached block still splits them (fetching it again would cost bytes). The upstream is a real
// repository directory's image backend; a counting layer records every request it gets.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { ReadOnlyBackend } from '../lib/block/read-only.js';
import type { BlockBackend } from '../lib/block/backend.js';
import { Repository } from '../lib/repo/repository.js';
import { BlockCache } from '../lib/cache/block-cache.js';
import { FetchClaims } from '../lib/cache/fetch-claims.js';
import { CachedUpstream } from '../lib/cache/cached-upstream.js';
import { DIGEST_BYTES } from '../lib/repo/manifest-format.js';
import { makeImage } from './cor-fixtures.js';

const BS = 65536;
const BLOCKS = 16;

/** Every request the repository got, as [first block, block count]. */
class CountingUpstream extends ReadOnlyBackend {
  readonly requests: Array<[number, number]> = [];
  constructor(private readonly inner: BlockBackend) {
    super();
  }
  get size() {
    return this.inner.size;
  }
  get constraints() {
    return this.inner.constraints;
  }
  read(offset: number, length: number): Promise<Buffer> {
    this.requests.push([offset / BS, Math.ceil(length / BS)]);
    return this.inner.read(offset, length);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

test('zero blocks inside a partly cached read are read along: the fetched runs stay one request each', (t) => withDir(async ({ path: dir }) => {
  // Blocks 1, 5, 9, 13 are all zeros; the others distinct random data.
  const content = randomBytes(BLOCKS * BS);
  for (let b = 1; b < BLOCKS; b += 4) content.fill(0, b * BS, (b + 1) * BS);
  const image = await makeImage(dir, 'demo', { size: content.length, content });
  const repo = await Repository.open(image.repoDir, { create: false });
  const cache = await BlockCache.open(join(dir, 'cache'), 1024 ** 3);
  const upstream = new CountingUpstream(repo.imageBackend(image.manifest, { verify: true }));
  const cached = new CachedUpstream(upstream, image.manifest, cache, await FetchClaims.open(cache.dir));
  try {
    // Blocks 0 and 12 are in the cache already.
    for (const b of [0, 12]) await cache.put(image.manifest.digests.toString('hex', b * DIGEST_BYTES, (b + 1) * DIGEST_BYTES), content.subarray(b * BS, (b + 1) * BS));
    const data = await cached.read(0, BLOCKS * BS);
    t.true(data.equals(content), 'the read returns the image');
    // To fetch: 2-4, 6-8, 10-11 (joined across the zero blocks 5 and 9) and 14-15 (after cached 12).
    t.deepEqual(upstream.requests.sort((a, b) => a[0] - b[0]), [[2, 10], [14, 2]]);
    t.is(cached.counters.cacheHits, 2);
    // Fetched blocks went into the cache, zero blocks did not: a second read asks the repository nothing.
    await cached.close();
    upstream.requests.length = 0;
    t.true((await cached.read(0, BLOCKS * BS)).equals(content));
    t.deepEqual(upstream.requests, []);
    t.is(cached.counters.cacheHits, 2 + 12, "every data block from the cache");
  } finally {
    await cached.close();
    await repo.close();
  }
}, { unsafeCleanup: true }));
