// Makes absent blocks present: claims them, queues them (fetch-queue.ts merges adjacent runs into
// one upstream request), fetches and verifies them, keeps the fetched data readable in memory
// (fresh-segments.ts), writes it at its own offset of the local disk, and only then marks the
// blocks present (durability rule 1, lib/map/block-map.ts). Zero blocks are never fetched: they
// become present as holes. Whoever needs a block present (a guest read, a partial write, the
// fill, a fetch ahead) asks here; nothing else writes fetched data.
import { BlockError, type BlockBackend } from '../block/backend.js';
import type { BlockMap } from '../map/block-map.js';
import { isAllZero } from '../block/zero-bytes.js';
import { releaseShared } from '../fetch/shared-buffers.js';
import { FetchQueue, MAX_ZERO_GAP_BLOCKS, type Priority } from './fetch-queue.js';
import type { LocalDisk } from './local-disk.js';
import type { BlockClaims } from './block-claims.js';
import type { FetchedSegment, FreshSegments } from './fresh-segments.js';
import type { ZeroBlocks } from './zero-blocks.js';

export interface FetchCounters {
  /** Requests sent upstream (each covers one or more adjacent blocks). */
  fetchRequests: number;
  fetchedBytes: number;
  fetchedBlocks: number;
  failedFetches: number;
}

export interface AbsentFetcherParts {
  readonly size: number;
  readonly blockSize: number;
  readonly map: BlockMap;
  readonly local: LocalDisk;
  /** Verified reads of the image (failover over the repositories). */
  readonly upstream: BlockBackend;
  readonly claims: BlockClaims;
  readonly fresh: FreshSegments;
  readonly zeros: ZeroBlocks;
  readonly log: (line: string) => void;
}

export interface AbsentFetcherOptions {
  /** Largest single fetch in blocks: adjacent absent blocks are coalesced up to this. */
  readonly maxRunBlocks: number;
  /** Fetches in flight at once. */
  readonly maxInFlight: number;
  /** See FetchQueueOptions.holdForTurn. */
  readonly holdForTurn: () => boolean;
}

export class AbsentFetcher {
  readonly counters: FetchCounters = { fetchRequests: 0, fetchedBytes: 0, fetchedBlocks: 0, failedFetches: 0 };
  private readonly queue: FetchQueue;

  constructor(private readonly parts: AbsentFetcherParts, private readonly options: AbsentFetcherOptions) {
    const { zeros, map } = parts;
    // Present zero blocks may sit inside a fetch (read along, never written): see fetchRun.
    this.queue = new FetchQueue((start, count, speculative) => this.fetchRun(start, count, speculative), {
      maxInFlight: options.maxInFlight,
      maxBlocks: options.maxRunBlocks,
      bridgeable: (block) => zeros.inImage(block) && map.isPresent(block),
      holdForTurn: options.holdForTurn,
    });
  }

  /** Guest runs waiting for an upstream slot. */
  get guestWaiting(): number {
    return this.queue.guestWaiting;
  }

  /**
   * Fetches every absent block in [first, last] (inclusive), sharing fetches already running.
   * Resolves once they are all present, or with `until: 'readable'` once each is present or
   * fetched, verified and not yet stored (then readable from the fresh segments).
   */
  async ensurePresent(first: number, last: number, priority: Priority, until: 'present' | 'readable' = 'present'): Promise<void> {
    const { map, claims, fresh } = this.parts;
    const done = until === 'readable'
      ? (b: number) => map.isPresent(b) || fresh.holds(b)
      : (b: number) => map.isPresent(b);
    const waits: Promise<void>[] = [];
    // Runs split by present (zero) blocks merge again in the queue: one request where possible.
    this.queue.together(() => {
      let i = first;
      while (i <= last) {
        if (done(i)) { i++; continue; }
        const pending = claims.holder(i);
        if (pending) {
          if (priority === 'guest') this.queue.promote(i);
          waits.push(pending);
          i++;
          continue;
        }
        const runStart = i;
        while (i <= last && i - runStart < this.options.maxRunBlocks && !map.isPresent(i) && !claims.isClaimed(i)) i++;
        waits.push(this.startFetch(runStart, i - runStart, priority));
      }
    });
    // A claim may have been a guest write or a failed fetch: check again until all done.
    const results = await Promise.allSettled(waits);
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    for (let b = first; b <= last; b++) if (!done(b)) return this.ensurePresent(b, last, priority, until);
  }

  /** Claims blocks [start, start + count) (absent, unclaimed) and queues their fetch. */
  startFetch(start: number, count: number, priority: Priority): Promise<void> {
    const { claims } = this.parts;
    const fetching = this.queue.enqueue(start, count, priority);
    // A guest read that joins a fetch ahead which then fails fetches for itself (ensurePresent
    // looks again), instead of failing with an error no guest request caused.
    const claim = priority === 'ahead' ? fetching.catch(() => undefined) : fetching;
    claims.claim(start, count, claim);
    const release = () => claims.release(start, count, claim);
    fetching.then(release, release);
    return fetching;
  }

  /**
   * Called by the fetch queue with a coalesced range whose blocks are all claimed and absent,
   * except present zero blocks the queue bridged (read along, never written, left alone).
   * Data blocks go upstream in as few requests as possible: short gaps of zero blocks are read
   * along (cheaper than another round trip) but never written; long gaps split the request.
   */
  private async fetchRun(start: number, count: number, speculative: boolean): Promise<void> {
    const { zeros } = this.parts;
    const end = start + count;
    const groups: Array<[number, number]> = [];
    for (let b = start; b < end; b++) {
      if (zeros.inImage(b)) continue;
      const group = groups[groups.length - 1];
      if (group && b - group[1] <= MAX_ZERO_GAP_BLOCKS) group[1] = b + 1;
      else groups.push([b, b + 1]);
    }
    await Promise.all([
      ...groups.map(([from, to]) => this.fetchData(from, to, speculative)),
      this.zeroAbsent(start, end),
    ]);
  }

  /**
   * One upstream request for blocks [from, to). Resolves once the data is verified and readable
   * from the fresh segments; its data blocks are then written locally (see storeAfterThisTurn)
   * and only then marked present.
   */
  private async fetchData(from: number, to: number, speculative: boolean): Promise<void> {
    const { blockSize, size, zeros } = this.parts;
    const offset = from * blockSize;
    const length = Math.min(to * blockSize, size) - offset;
    let data: Buffer;
    try {
      this.counters.fetchRequests++;
      data = await (speculative ? this.readSpeculative(offset, length) : this.parts.upstream.read(offset, length));
    } catch (error) {
      this.counters.failedFetches++;
      throw error instanceof BlockError ? error : new BlockError('EIO', (error as Error).message, { cause: error });
    }
    const segments: FetchedSegment[] = [];
    for (let b = from; b < to;) {
      const segmentStart = b;
      while (b < to && !zeros.inImage(b)) b++;
      if (b > segmentStart) {
        const at = (segmentStart - from) * blockSize;
        const bytes = Math.min(b * blockSize, size) - segmentStart * blockSize;
        segments.push({ from: segmentStart, to: b, data: data.subarray(at, at + bytes) });
      }
      // Zero blocks in between are not stored: they may be bridged present blocks the guest has
      // written since (their bytes here are the image's zeros, not the guest's data).
      while (b < to && zeros.inImage(b)) b++;
    }
    this.counters.fetchedBytes += length;
    this.storeAfterThisTurn(segments, data);
  }

  /** Reported as speculative where the upstream can tell (failover's log): no guest read fails with it. */
  private readSpeculative(offset: number, length: number): Promise<Buffer> {
    const upstream = this.parts.upstream as Partial<{ readSpeculative(offset: number, length: number): Promise<Buffer> }>;
    return upstream.readSpeculative ? upstream.readSpeculative.call(this.parts.upstream, offset, length) : this.parts.upstream.read(offset, length);
  }

  /**
   * Makes `segments` readable from memory now and writes them to the local disk after this turn
   * of the event loop, when the guest reads that waited for them have been answered. Their blocks
   * stay claimed until stored (a guest write waits for that), and become present only after their
   * local write returned (rule 1). A failed local write leaves them absent (fetched again later).
   */
  private storeAfterThisTurn(segments: FetchedSegment[], fetched: Buffer): void {
    const { claims, fresh } = this.parts;
    fresh.add(segments);
    const stored: Promise<void> = new Promise<void>((resolve) => setImmediate(resolve))
      // All settled before the blocks are released: no write of this fetch may land after a guest
      // write claimed one of its blocks.
      .then(() => Promise.allSettled(segments.map((segment) => this.store(segment))))
      .then((results) => {
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
      })
      .finally(() => {
        fresh.remove(segments);
        for (const segment of segments) claims.release(segment.from, segment.to - segment.from, stored);
        // Our hold on the fetch's buffer goes back; guest reads that lent from it hold their own.
        releaseShared(fetched);
      });
    stored.catch((error) => this.parts.log(`could not store fetched blocks locally (they stay absent): ${(error as Error).message}`));
    for (const segment of segments) claims.claim(segment.from, segment.to - segment.from, stored);
  }

  private async store(segment: FetchedSegment): Promise<void> {
    await this.parts.local.writeInBackground(segment.from * this.parts.blockSize, segment.data);
    this.counters.fetchedBlocks += segment.to - segment.from;
    // Rule 1: present in memory only after the local write returned; durable at the next commit.
    this.parts.map.markPresent(segment.from, segment.to - segment.from);
  }

  /** Zero blocks of [start, end) are never fetched, and the local disk is kept sparse. */
  private async zeroAbsent(start: number, end: number): Promise<void> {
    const { map, zeros, blockSize, size } = this.parts;
    for (let b = start; b < end;) {
      if (!zeros.inImage(b) || map.isPresent(b)) { b++; continue; }
      const segmentStart = b;
      while (b < end && zeros.inImage(b) && !map.isPresent(b)) b++;
      // On a disk created sparse with its map, an absent block without W is still a hole;
      // otherwise look before writing zeros.
      if (!zeros.stillHoles(segmentStart, b)) {
        const offset = segmentStart * blockSize;
        await this.zeroLocally(offset, Math.min(b * blockSize, size) - offset);
      }
      map.markPresent(segmentStart, b - segmentStart);
      zeros.markPresentZero(segmentStart, b - segmentStart);
    }
  }

  /** Writes zeros where the local disk is not already zero, 1 MiB at a time (bounded memory). */
  private async zeroLocally(offset: number, length: number): Promise<void> {
    const step = 1024 * 1024;
    const { local } = this.parts;
    for (let at = offset; at < offset + length; at += step) {
      const chunk = Math.min(step, offset + length - at);
      if (!isAllZero(await local.read(at, chunk))) await local.writeZeroes(at, chunk);
    }
  }
}
