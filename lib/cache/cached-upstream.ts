// The copy-on-read device's upstream through the host-wide block cache: a read of whole blocks
// takes what the cache has (verified there), fetches the rest from the repositories in runs as
// large as before, and puts what it fetched into the cache for every other VM on the host. Blocks
// missing from the cache are claimed first (fetch-claims.ts): a block another process is fetching
// right now is waited for, not fetched twice. All-zero blocks never touch the cache; a short gap of
// them between blocks to fetch is read along (as the copy-on-read device does) so that a run
// stays one repository request.
import { ReadOnlyBackend } from '../block/read-only.js';
import { BlockError, type BlockBackend } from '../block/backend.js';
import { DIGEST_BYTES, isZeroDigestAt, type Manifest } from '../repo/manifest-format.js';
import { releaseShared } from '../fetch/shared-buffers.js';
import type { BlockCache } from './block-cache.js';
import type { FetchClaims } from './fetch-claims.js';
import type { SpeculationPeers } from './speculation-peers.js';
import { MAX_ZERO_GAP_BLOCKS } from '../cor/fetch-queue.js';

/**
 * How long a read waits for a block another live process is fetching before fetching it itself:
 * that process fetches from the same repositories, so waiting is never slower than fetching,
 * unless it hangs; then the guest waits this long once (the repositories' own default timeout).
 */
const WAIT_FOR_NEIGHBOUR_MS = 10_000;

type Upstream = BlockBackend & { readSpeculative?(offset: number, length: number): Promise<Buffer> };

export interface CachedUpstreamCounters {
  /** Blocks served from the host cache instead of a repository. */
  cacheHits: number;
  /** Blocks another process fetched while this one waited for them. */
  neighbourFetched: number;
}

export class CachedUpstream extends ReadOnlyBackend {
  readonly size: number;
  readonly counters: CachedUpstreamCounters = { cacheHits: 0, neighbourFetched: 0 };
  /** Puts into the cache still running (close() waits for them). */
  private readonly storing = new Set<Promise<void>>();

  constructor(
    private readonly inner: Upstream,
    private readonly manifest: Manifest,
    private readonly cache: BlockCache,
    private readonly claims: FetchClaims,
    private readonly log: (line: string) => void = () => {},
    /** The host's devices reading through this cache now (speculation-peers.ts). */
    private readonly peers?: SpeculationPeers,
  ) {
    super();
    this.size = inner.size;
  }

  get constraints() {
    return this.inner.constraints;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.readThroughCache(offset, length, false);
  }

  /** A fetch ahead of the guest: its repository reads are reported as speculative. */
  readSpeculative(offset: number, length: number): Promise<Buffer> {
    return this.readThroughCache(offset, length, true);
  }

  /**
   * How many devices on this host share the fetch-ahead budget now (this one included): the
   * copy-on-read device divides its budget by it (fetch-ahead.ts).
   */
  speculationSharers(): number {
    return this.peers?.sharers() ?? 1;
  }

  private digestOf(block: number): string | undefined {
    const at = block * DIGEST_BYTES;
    if (isZeroDigestAt(this.manifest.digests, at)) return undefined;
    return this.manifest.digests.toString('hex', at, at + DIGEST_BYTES);
  }

  private blockLength(block: number): number {
    const { blockSize } = this.manifest;
    return Math.min(blockSize, this.size - block * blockSize);
  }

  private async readThroughCache(offset: number, length: number, speculative: boolean): Promise<Buffer> {
    this.peers?.fetching();
    const { blockSize } = this.manifest;
    if (offset % blockSize !== 0) throw new BlockError('EINVAL', `cached reads need whole blocks, got ${offset}+${length}`);
    const first = offset / blockSize;
    const count = Math.ceil(length / blockSize);
    const digests = Array.from({ length: count }, (_, i) => this.digestOf(first + i));
    // What the cache has.
    const found = await Promise.all(digests.map((digest, i) => (digest ? this.cache.get(digest, this.blockLength(first + i)) : undefined)));
    this.counters.cacheHits += found.filter(Boolean).length;
    // The rest, by digest (a run may hold the same content twice: claimed and fetched once).
    const missing = new Map<string, number[]>();
    digests.forEach((digest, i) => {
      if (digest && !found[i]) missing.set(digest, [...(missing.get(digest) ?? []), i]);
    });
    // Who fetches each: this process (claimed), or a neighbour already at it.
    const claimed = new Set<string>();
    const neighbours: string[] = [];
    await Promise.all([...missing.keys()].map(async (digest) => {
      if (!(await this.claims.claim(digest))) {
        neighbours.push(digest);
        return;
      }
      // A neighbour may have stored it between our look and our claim: then it is not fetched again.
      const indexes = missing.get(digest)!;
      const data = await this.cache.get(digest, this.blockLength(first + indexes[0]!));
      if (!data) {
        claimed.add(digest);
        return;
      }
      await this.claims.release(digest);
      for (const i of indexes) found[i] = data;
      this.counters.neighbourFetched++;
    }));
    try {
      const claimedIndexes = digests.flatMap((digest, i) => (digest && claimed.has(digest) ? [i] : []));
      if (neighbours.length === 0 && claimedIndexes.length === digests.filter(Boolean).length) {
        // Nothing of it in the cache (a cold read): one repository read, its buffer handed on as is.
        const data = await this.fetch(offset, length, speculative);
        this.keep(first, digests, data, claimed, claimed);
        return data;
      }
      // Ours are fetched while the neighbours' blocks are waited for (each side waiting for the
      // other before fetching its own would stall both); those that do not arrive are fetched too.
      const [fetched, late] = await Promise.all([
        this.fetchRuns(offset, length, digests, claimedIndexes, claimed, claimed, speculative),
        this.waitForNeighbours(first, missing, neighbours, found),
      ]);
      const lateSet = new Set(late);
      const lateIndexes = digests.flatMap((digest, i) => (digest && lateSet.has(digest) ? [i] : []));
      const fetchedLate = await this.fetchRuns(offset, length, digests, lateIndexes, lateSet, claimed, speculative);
      return this.assemble(length, found, [...fetched, ...fetchedLate]);
    } finally {
      // Claims of blocks being stored are released once stored (keep); the others now.
      for (const digest of claimed) if (!this.keeping.has(digest)) await this.claims.release(digest);
    }
  }

  /** Fetches the blocks at `indexes` (of the read at `offset`) in runs, keeping those in `wanted`. */
  private fetchRuns(offset: number, length: number, digests: ReadonlyArray<string | undefined>, indexes: readonly number[], wanted: ReadonlySet<string>, claimed: ReadonlySet<string>, speculative: boolean): Promise<Array<{ from: number; data: Buffer }>> {
    const { blockSize } = this.manifest;
    const first = offset / blockSize;
    // Zero blocks between two blocks to fetch are read along (they cost no repository read), not split on.
    return Promise.all(runsOf(indexes, (i) => digests[i] === undefined).map(async ([from, to]) => {
      const runOffset = offset + from * blockSize;
      const runLength = Math.min(offset + length, runOffset + (to - from) * blockSize) - runOffset;
      const data = await this.fetch(runOffset, runLength, speculative);
      this.keep(first + from, digests.slice(from, to), data, wanted, claimed);
      return { from, data };
    }));
  }

  /**
   * Waits (bounded) for the blocks neighbours are fetching and puts them into `found`; returns the
   * digests that did not arrive (their neighbour died, gave up, or is too slow).
   */
  private async waitForNeighbours(first: number, missing: ReadonlyMap<string, number[]>, neighbours: readonly string[], found: Array<Buffer | undefined>): Promise<string[]> {
    const late: string[] = [];
    await Promise.all(neighbours.map(async (digest) => {
      const indexes = missing.get(digest)!;
      const arrived = await this.claims.waitFor(digest, () => this.cache.has(digest), WAIT_FOR_NEIGHBOUR_MS);
      const data = arrived ? await this.cache.get(digest, this.blockLength(first + indexes[0]!)) : undefined;
      if (!data) {
        late.push(digest);
        return;
      }
      for (const i of indexes) found[i] = data;
      this.counters.neighbourFetched++;
    }));
    return late;
  }

  /** Digests being put into the cache by keep(). */
  private readonly keeping = new Set<string>();

  private fetch(offset: number, length: number, speculative: boolean): Promise<Buffer> {
    return speculative && this.inner.readSpeculative ? this.inner.readSpeculative(offset, length) : this.inner.read(offset, length);
  }

  /**
   * Puts the blocks of a fetched run (starting at block `first`) whose digest is in `wanted` into
   * the cache, in the background, each once; the claims among them (`claimed`) are released when
   * stored. Copied now: the run's buffer may go back to a pool once the caller is done with it.
   */
  private keep(first: number, digests: ReadonlyArray<string | undefined>, data: Buffer, wanted: ReadonlySet<string>, claimed: ReadonlySet<string>): void {
    const { blockSize } = this.manifest;
    digests.forEach((digest, i) => {
      if (!digest || !wanted.has(digest) || this.keeping.has(digest)) return;
      const copy = Buffer.from(data.subarray(i * blockSize, i * blockSize + this.blockLength(first + i)));
      this.keeping.add(digest);
      const put = this.cache.put(digest, copy)
        .catch((error: Error) => this.log(`block cache: could not store a block: ${error.message}`))
        .finally(async () => {
          this.keeping.delete(digest);
          this.storing.delete(put);
          if (claimed.has(digest)) await this.claims.release(digest);
        });
      this.storing.add(put);
    });
  }

  /** One buffer of `length` from cached blocks (by index) and fetched runs; zero blocks stay zero. */
  private assemble(length: number, found: ReadonlyArray<Buffer | undefined>, fetched: ReadonlyArray<{ from: number; data: Buffer }>): Buffer {
    const { blockSize } = this.manifest;
    const out = Buffer.alloc(length);
    found.forEach((data, i) => data?.copy(out, i * blockSize));
    for (const { from, data } of fetched) {
      data.copy(out, from * blockSize);
      releaseShared(data);
    }
    return out;
  }

  /** Waits for the blocks still being put into the cache; the repositories' owner closes them. */
  async close(): Promise<void> {
    while (this.storing.size > 0) await Promise.allSettled([...this.storing]);
    await this.peers?.close();
  }
}

/**
 * [from, to) runs of a sorted list of indexes; a gap of at most MAX_ZERO_GAP_BLOCKS indexes that
 * are all `bridgeable` joins the runs on either side of it.
 */
function runsOf(sorted: readonly number[], bridgeable: (index: number) => boolean): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (const i of sorted) {
    const last = runs[runs.length - 1];
    if (last && (last[1] === i || bridges(last[1], i, bridgeable))) last[1] = i + 1;
    else runs.push([i, i + 1]);
  }
  return runs;
}

function bridges(from: number, to: number, bridgeable: (index: number) => boolean): boolean {
  if (to - from > MAX_ZERO_GAP_BLOCKS) return false;
  for (let i = from; i < to; i++) if (!bridgeable(i)) return false;
  return true;
}

