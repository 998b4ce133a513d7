// Copy-on-read layer: a BlockBackend over (local raw disk + block map + verified upstream).
// Read: present blocks come from the local disk; absent ones are fetched (adjacent absent blocks
// in one request, several requests in flight, one shared fetch per block) and verified; the guest
// reads waiting for them are answered from the fetched memory, then the blocks are written locally
// and only then marked present. Write: W-intent first (durable), then the data, then R.
// The durability rules are stated and enforced in lib/map/block-map.ts; this file keeps rule 2
// (W before data) and rule 3 (FLUSH = commit).
//
// Locking rule: `busy` holds, per block, the promise of an operation that will make an absent
// block present (a fetch, the local write of fetched data, or a whole-block guest write). Whoever
// wants to change an absent block must first await its busy entry; claims are made synchronously
// after the last await, so two claims on one block cannot interleave.
import { BlockError, type BlockBackend, type BlockCapabilities, type Extent, type WriteOptions } from '../block/backend.js';
import type { BlockMap } from '../map/block-map.js';
import { Bitset } from '../map/bitset.js';
import { DIGEST_BYTES, type Manifest } from '../repo/manifest-format.js';
import { isAllZero } from '../fetch/verify.js';
import { releaseShared, retainShared } from '../fetch/shared-buffers.js';
import { FetchQueue, MAX_ZERO_GAP_BLOCKS, type Priority } from './fetch-queue.js';
import type { LocalDisk } from './local-disk.js';
import { FetchAhead, type FetchAheadCounters } from './fetch-ahead.js';
import { GuestDemand } from './guest-demand.js';
import { readByFilling, zeroBlockRanges, type KnowsZeroRanges, type LendsReads, type LentBytes } from '../block/read-into.js';

export interface CorBackendOptions {
  /** Largest single fetch (default 4 MiB): adjacent absent blocks are coalesced up to this. */
  readonly maxFetchBytes?: number;
  /** Fetches in flight at once (default 8). */
  readonly maxInFlight?: number;
  /**
   * Largest window fetched ahead of a sequential reader (default 8 MiB; 0 = off: only what the
   * guest needs is fetched). Within a budget paid by the guest's own reads: see fetch-ahead.ts.
   */
  readonly fetchAheadBytes?: number;
  /** Commit the map this often while reads mark blocks present (default 1000 ms). */
  readonly commitIntervalMs?: number;
  readonly log?: (line: string) => void;
}

export interface CorCounters {
  /** Requests sent upstream (each covers one or more adjacent blocks). */
  fetchRequests: number;
  fetchedBytes: number;
  fetchedBlocks: number;
  readRequests: number;
  failedFetches: number;
}

/**
 * Fetch ahead only while at most this many guest requests are running: a deeper queue already
 * gives the fetch queue large adjacent runs to merge.
 */
const FETCH_AHEAD_MAX_GUEST_REQUESTS = 8;

/**
 * Above this many guest requests running (a bulk copy), a new fetch waits for the end of the
 * event-loop turn so that requests that arrived together merge (see FetchQueueOptions.holdForTurn).
 */
const MERGE_TURN_MIN_GUEST_REQUESTS = 8;

const CAPABILITIES: BlockCapabilities = { write: true, flush: true, trim: true, writeZeroes: true, extents: true, multiConn: true };

/** Bound on the work one blockStatus call does (clients ask about the whole rest of the disk). */
const MAX_EXTENTS_PER_CALL = 32;

export class CorBackend implements BlockBackend, KnowsZeroRanges, LendsReads {
  readonly capabilities = CAPABILITIES;
  readonly size: number;
  readonly constraints;
  readonly counters: CorCounters = { fetchRequests: 0, fetchedBytes: 0, fetchedBlocks: 0, readRequests: 0, failedFetches: 0 };
  private readonly blockSize: number;
  private readonly zeroBlocks: Uint8Array;
  /**
   * Present blocks this process knows still read as zeros: image zero blocks made present without
   * a write (a hole answer, a fetch that skipped them). Any guest change clears the bit. Reads of
   * them need no pread (the kernel would zero-fill page-cache pages for a hole), and block status
   * can call them zero. Not persisted: after a restart they read from the disk like any block.
   */
  private readonly zeroPresent: Bitset;
  private readonly busy = new Map<number, Promise<void>>();
  private readonly queue: FetchQueue;
  private readonly maxRunBlocks: number;
  private readonly fetchAhead: FetchAhead;
  private readonly demand: GuestDemand;
  private readonly commitTimer: NodeJS.Timeout;
  /**
   * Runs just fetched and verified, kept until they are stored: the guest reads that waited for
   * them are answered from here, before the local write (which then overlaps the client's next
   * request) and without reading the local disk back. `unstored` marks their blocks.
   */
  private fresh: FetchedSegment[] = [];
  private readonly unstored: Bitset;
  private guestRequests = 0;
  private idleWaiters: Array<() => void> = [];
  private closed = false;

  constructor(
    readonly manifest: Manifest,
    private readonly local: LocalDisk,
    readonly map: BlockMap,
    private readonly upstream: BlockBackend,
    private readonly options: CorBackendOptions = {},
  ) {
    this.size = manifest.size;
    this.blockSize = manifest.blockSize;
    this.constraints = { minimum: 1, preferred: Math.min(this.blockSize, 65536), maximum: 32 * 1024 * 1024 };
    // One byte per block, computed without allocating per block (large images: 10^5+ blocks).
    this.zeroBlocks = new Uint8Array(manifest.blockCount);
    this.zeroPresent = new Bitset(manifest.blockCount);
    this.unstored = new Bitset(manifest.blockCount);
    const digests = manifest.digests;
    for (let i = 0; i < manifest.blockCount; i++) {
      let zero = 1;
      for (let at = i * DIGEST_BYTES, end = at + DIGEST_BYTES; at < end; at++) if (digests[at] !== 0) { zero = 0; break; }
      this.zeroBlocks[i] = zero;
    }
    this.maxRunBlocks = Math.max(1, Math.floor((options.maxFetchBytes ?? 4 * 1024 * 1024) / this.blockSize));
    // Present zero blocks may sit inside a fetch (read along, never written): see fetchRun.
    this.queue = new FetchQueue((start, count, speculative) => this.fetchRun(start, count, speculative), {
      maxInFlight: options.maxInFlight ?? 8,
      maxBlocks: this.maxRunBlocks,
      bridgeable: (block) => this.zeroBlocks[block] === 1 && this.map.isPresent(block),
      holdForTurn: () => this.guestRequests > MERGE_TURN_MIN_GUEST_REQUESTS,
    });
    const dataBytes = (block: number) => this.zeroBlocks[block] === 1 ? 0 : Math.min(this.blockSize, this.size - block * this.blockSize);
    this.demand = new GuestDemand(manifest.blockCount, dataBytes, (block) => this.map.isModified(block));
    this.fetchAhead = new FetchAhead({
      maxWindowBlocks: Math.floor((options.fetchAheadBytes ?? 8 * 1024 * 1024) / this.blockSize),
      maxRunBlocks: this.maxRunBlocks,
      blockCount: manifest.blockCount,
      blockSize: this.blockSize,
      dataBytes,
      demandedBytes: () => this.demand.demandedBytes,
    });
    this.commitTimer = setInterval(() => {
      if (this.map.hasUncommittedChanges && !this.closed) this.map.commit().catch((error) => this.log(`map commit failed: ${(error as Error).message}`));
    }, options.commitIntervalMs ?? 1000);
    this.commitTimer.unref();
  }

  // ---- guest-facing BlockBackend ----

  async read(offset: number, length: number): Promise<Buffer> {
    return readByFilling(this, offset, length);
  }

  /** Like read, into a buffer the caller owns (the NBD server reuses pooled buffers: less GC). */
  async readInto(offset: number, target: Buffer): Promise<void> {
    await this.readOrLend(offset, target, false);
  }

  /** Like readInto, but the bytes of a fetch that just completed are lent, not copied. */
  readIntoOrLend(offset: number, target: Buffer): Promise<LentBytes | undefined> {
    return this.readOrLend(offset, target, true);
  }

  private async readOrLend(offset: number, target: Buffer, lend: boolean): Promise<LentBytes | undefined> {
    const length = target.length;
    return this.asGuest(async () => {
      this.counters.readRequests++;
      this.checkRange(offset, length);
      if (length === 0) return undefined;
      const [first, last] = this.blockRange(offset, length);
      this.demand.need(first, last);
      // A read of blocks fetched ahead, or a miss right after present or fetching blocks, is a
      // sequential reader: the window ahead of it is topped up (within the budget).
      const followsAhead = this.fetchAhead.guestRead(first, last);
      // The common case once warm: everything present, no promise juggling.
      if (!this.allPresent(first, last)) {
        const sequential = followsAhead || (first > 0 && (this.map.isPresent(first - 1) || this.busy.has(first - 1)));
        const own = this.ensurePresent(first, last, 'guest', 'readable');
        if (sequential) this.fetchAheadOf(last);
        await own;
        const fresh = this.freshCovering(offset, length);
        if (fresh && lend) return lendBytes(fresh);
        if (fresh) {
          fresh.copy(target);
          return undefined;
        }
        // Across fetched segments (or present blocks): each block from memory or the disk.
        if (!this.allPresent(first, last)) {
          await this.readAcrossFresh(offset, target, first, last);
          return undefined;
        }
      } else if (followsAhead) this.fetchAheadOf(last);
      // Always read the disk: W clear does not prove "equals the manifest" for a present block
      // (a replicator clears W once the guest's data is shipped). Holes read fast anyway.
      await this.local.readInto(offset, target);
      return undefined;
    });
  }

  /**
   * Absent zero blocks of a disk created sparse with its map are holes that equal the image: they
   * become present here without any I/O, and the server answers them as holes instead of reading
   * them; so are present blocks known to be still zero (`zeroPresent`). Other blocks are read as
   * usual (a present block is not known to be zero: the guest may have written it, and W clear
   * does not prove otherwise).
   */
  knownZeroRanges(offset: number, length: number): Array<readonly [number, number]> {
    if (this.closed || length <= 0 || offset < 0 || offset + length > this.size) return [];
    const zeros = zeroBlockRanges(offset, length, this.blockSize, this.size, (b) => {
      if (this.zeroPresent.get(b)) return true;
      if (!this.readsAsZeroUnfetched(b)) return false;
      this.map.markPresent(b, 1);
      this.zeroPresent.set(b);
      return true;
    });
    // The reply's data pieces around these holes are read one by one, each its own fetch: start
    // one fetch for all of them now (the pieces then wait for it). Its errors reach them there.
    if (zeros.length > 0) {
      const [first, last] = this.blockRange(offset, length);
      if (!this.allPresent(first, last)) this.ensurePresent(first, last, 'guest', 'readable').catch(() => undefined);
    }
    return zeros;
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    await this.asGuest(() => this.modify(offset, data.length, () => this.local.write(offset, data), options));
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    await this.asGuest(() => this.modify(offset, length, () => this.local.writeZeroes(offset, length), options));
  }

  /** Whole blocks are zeroed (no fetch); partial head/tail are left alone, as TRIM allows. */
  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    const start = Math.ceil(offset / this.blockSize) * this.blockSize;
    const end = offset + length >= this.size ? this.size : Math.floor((offset + length) / this.blockSize) * this.blockSize;
    if (end > start) await this.writeZeroes(start, end - start, options);
  }

  /** Rule 3: acknowledged only once data and map are durable. */
  async flush(): Promise<void> {
    await this.map.commit();
  }

  /**
   * Absent zero blocks read as zeros (a hole in the local disk), and so do the present ones known
   * to be still zero: reported as such, so a client
   * copying the disk (qemu-img convert, nbdcopy, a QEMU block job) skips them without a fetch.
   * Everything else is reported as data: a present block is not known to be zero.
   */
  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const end = Math.min(offset + length, this.size);
    const extents: Extent[] = [];
    let at = offset;
    while (at < end && extents.length < MAX_EXTENTS_PER_CALL) {
      let block = Math.floor(at / this.blockSize);
      const zero = this.readsAsZero(block);
      while ((block + 1) * this.blockSize < end && this.readsAsZero(block + 1) === zero) block++;
      const to = Math.min(end, (block + 1) * this.blockSize);
      extents.push({ offset: at, length: to - at, hole: zero, zero });
      at = to;
    }
    return extents;
  }

  private readsAsZeroUnfetched(block: number): boolean {
    return this.zeroBlocks[block] === 1 && !this.map.isPresent(block) && !this.busy.has(block) && this.knownZero(block, block + 1);
  }

  private readsAsZero(block: number): boolean {
    return this.zeroPresent.get(block) || this.readsAsZeroUnfetched(block);
  }

  // ---- for fill and the device ----

  /**
   * Fetches every absent block in [first, last] (inclusive), sharing fetches already running.
   * Resolves once they are all present, or with `until: 'readable'` once each is present or
   * fetched, verified and not yet stored (then in `fresh`).
   */
  async ensurePresent(first: number, last: number, priority: Priority, until: 'present' | 'readable' = 'present'): Promise<void> {
    const done = until === 'readable'
      ? (b: number) => this.map.isPresent(b) || this.unstored.get(b)
      : (b: number) => this.map.isPresent(b);
    const waits: Promise<void>[] = [];
    // Runs split by present (zero) blocks merge again in the queue: one request where possible.
    this.queue.together(() => {
      let i = first;
      while (i <= last) {
        if (done(i)) { i++; continue; }
        const pending = this.busy.get(i);
        if (pending) {
          if (priority === 'guest') this.queue.promote(i);
          waits.push(pending);
          i++;
          continue;
        }
        const runStart = i;
        while (i <= last && i - runStart < this.maxRunBlocks && !this.map.isPresent(i) && !this.busy.has(i)) i++;
        waits.push(this.startFetch(runStart, i - runStart, priority));
      }
    });
    // A busy entry may have been a guest write or a failed fetch: check again until all done.
    const results = await Promise.allSettled(waits);
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    for (let b = first; b <= last; b++) if (!done(b)) return this.ensurePresent(b, last, priority, until);
  }

  /** Blocks still to fetch: absent, and not zero in the image. */
  absentDataBlocks(): number {
    let count = 0;
    for (let b = this.map.nextAbsent(0); b >= 0; b = this.map.nextAbsent(b + 1)) if (this.zeroBlocks[b] !== 1) count++;
    return count;
  }

  /** Bytes fetched ahead, and of those the bytes the guest then read (fetch-ahead.ts). */
  get fetchAheadCounters(): Readonly<FetchAheadCounters> {
    return this.fetchAhead.counters;
  }

  /** Bytes of image data the guest has needed (read, or partially overwritten), each block once. */
  get demandedBytes(): number {
    return this.demand.demandedBytes;
  }

  /** Guest requests running now; fill waits for zero. */
  get activeGuestRequests(): number {
    return this.guestRequests + this.queue.guestWaiting;
  }

  /** Resolves when no guest request is running. */
  whenGuestIdle(): Promise<void> {
    if (this.activeGuestRequests === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.commitTimer);
    await Promise.allSettled([...new Set(this.busy.values())]);
    await this.map.close();
    await this.local.close();
  }

  // ---- internals ----

  private async modify(offset: number, length: number, apply: () => Promise<void>, options?: WriteOptions): Promise<void> {
    this.checkRange(offset, length);
    if (length === 0) return;
    const [first, last] = this.blockRange(offset, length);
    // Partially covered absent blocks need their old content first (head / tail).
    const partial = [first, last].filter((b, i, all) => all.indexOf(b) === i && !this.coversBlock(offset, length, b));
    for (const block of partial) {
      this.demand.need(block, block);
      await this.ensurePresent(block, block, 'guest');
    }
    this.fetchAhead.overwritten(first, last);
    // Wait out fetches on the blocks we overwrite, then claim the absent ones synchronously.
    for (;;) {
      const pending = this.firstBusy(first, last);
      if (!pending) break;
      await pending.catch(() => undefined);
    }
    const claimed: number[] = [];
    for (let b = first; b <= last; b++) if (!this.map.isPresent(b)) claimed.push(b);
    let done!: () => void;
    const writing = new Promise<void>((resolve) => { done = resolve; });
    for (const b of claimed) this.busy.set(b, writing);
    // No fetched segment overlaps [first, last] now: its blocks stay busy until stored, and the
    // store drops it from `fresh` before the busy wait above can end.
    this.zeroPresent.clearRange(first, last - first + 1);
    try {
      // Rule 2: the W-intent is durable before the data write is issued.
      if (this.map.markModified(first, last - first + 1)) await this.map.commit();
      await apply();
      for (const b of claimed) this.map.markPresent(b, 1);
    } finally {
      for (const b of claimed) if (this.busy.get(b) === writing) this.busy.delete(b);
      done();
    }
    if (options?.fua) await this.map.commit();
  }

  private startFetch(start: number, count: number, priority: Priority): Promise<void> {
    const fetching = this.queue.enqueue(start, count, priority);
    // A guest read that joins a fetch ahead which then fails fetches for itself (ensurePresent
    // looks again), instead of failing with an error no guest request caused.
    const claim = priority === 'ahead' ? fetching.catch(() => undefined) : fetching;
    for (let b = start; b < start + count; b++) this.busy.set(b, claim);
    const clear = () => { for (let b = start; b < start + count; b++) if (this.busy.get(b) === claim) this.busy.delete(b); };
    fetching.then(clear, clear);
    return fetching;
  }

  /**
   * Fetches ahead of a guest read that ended at block `last`, if the window and the budget allow
   * (fetch-ahead.ts). Not for a reader with many requests in flight: the fetch queue merges those.
   */
  private fetchAheadOf(last: number): void {
    if (this.guestRequests > FETCH_AHEAD_MAX_GUEST_REQUESTS || this.closed) return;
    const run = this.fetchAhead.plan(last, (b) => !this.map.isPresent(b) && !this.busy.has(b));
    if (!run) return;
    const [from, to] = run;
    // Its failure only matters to a later read, which fetches again (logged as speculative).
    this.startFetch(from, to - from, 'ahead').catch(() => this.fetchAhead.failed(from, to));
  }

  /**
   * Called by the fetch queue with a coalesced range whose blocks are all claimed and absent,
   * except present zero blocks the queue bridged (read along, never written, left alone).
   * Data blocks go upstream in as few requests as possible: short gaps of zero blocks are read
   * along (cheaper than another round trip) but never written; long gaps split the request.
   */
  private async fetchRun(start: number, count: number, speculative: boolean): Promise<void> {
    const end = start + count;
    const groups: Array<[number, number]> = [];
    for (let b = start; b < end; b++) {
      if (this.zeroBlocks[b] === 1) continue;
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
   * One upstream request for blocks [from, to). Resolves once the data is verified and in `fresh`;
   * its data blocks are then written locally (see storeAfterThisTurn) and only then marked present.
   */
  private async fetchData(from: number, to: number, speculative: boolean): Promise<void> {
    const offset = from * this.blockSize;
    const length = Math.min(to * this.blockSize, this.size) - offset;
    let data: Buffer;
    try {
      this.counters.fetchRequests++;
      data = await (speculative ? this.readSpeculative(offset, length) : this.upstream.read(offset, length));
    } catch (error) {
      this.counters.failedFetches++;
      throw error instanceof BlockError ? error : new BlockError('EIO', (error as Error).message, { cause: error });
    }
    const segments: FetchedSegment[] = [];
    for (let b = from; b < to;) {
      const segmentStart = b;
      while (b < to && this.zeroBlocks[b] !== 1) b++;
      if (b > segmentStart) {
        const at = (segmentStart - from) * this.blockSize;
        const bytes = Math.min(b * this.blockSize, this.size) - segmentStart * this.blockSize;
        segments.push({ from: segmentStart, to: b, data: data.subarray(at, at + bytes) });
      }
      // Zero blocks in between are not stored: they may be bridged present blocks the guest has
      // written since (their bytes here are the image's zeros, not the guest's data).
      while (b < to && this.zeroBlocks[b] === 1) b++;
    }
    this.counters.fetchedBytes += length;
    this.storeAfterThisTurn(segments, data);
  }

  /**
   * Makes `segments` readable from memory now and writes them to the local disk after this turn
   * of the event loop, when the guest reads that waited for them have been answered. Their blocks
   * stay busy until stored (a guest write waits for that), and become present only after their
   * local write returned (rule 1). A failed local write leaves them absent (fetched again later).
   */
  private storeAfterThisTurn(segments: FetchedSegment[], fetched: Buffer): void {
    this.fresh.push(...segments);
    for (const segment of segments) this.unstored.setRange(segment.from, segment.to - segment.from);
    const stored: Promise<void> = new Promise<void>((resolve) => setImmediate(resolve))
      // All settled before the blocks are released: no write of this fetch may land after a guest
      // write claimed one of its blocks.
      .then(() => Promise.allSettled(segments.map((segment) => this.store(segment))))
      .then((results) => {
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
      })
      .finally(() => {
        for (const segment of segments) {
          this.unstored.clearRange(segment.from, segment.to - segment.from);
          for (let b = segment.from; b < segment.to; b++) if (this.busy.get(b) === stored) this.busy.delete(b);
        }
        this.fresh = this.fresh.filter((segment) => !segments.includes(segment));
        // Our hold on the fetch's buffer goes back; guest reads that lent from it hold their own.
        releaseShared(fetched);
      });
    stored.catch((error) => this.log(`could not store fetched blocks locally (they stay absent): ${(error as Error).message}`));
    for (const segment of segments) for (let b = segment.from; b < segment.to; b++) this.busy.set(b, stored);
  }

  private async store(segment: FetchedSegment): Promise<void> {
    await this.local.write(segment.from * this.blockSize, segment.data);
    this.counters.fetchedBlocks += segment.to - segment.from;
    // Rule 1: present in memory only after the local write returned; durable at the next commit.
    this.map.markPresent(segment.from, segment.to - segment.from);
  }

  /** Zero blocks of [start, end) are never fetched, and the local disk is kept sparse. */
  private async zeroAbsent(start: number, end: number): Promise<void> {
    for (let b = start; b < end;) {
      if (this.zeroBlocks[b] !== 1 || this.map.isPresent(b)) { b++; continue; }
      const segmentStart = b;
      while (b < end && this.zeroBlocks[b] === 1 && !this.map.isPresent(b)) b++;
      // On a disk created sparse with its map, an absent block without W is still a hole;
      // otherwise look before writing zeros.
      if (!this.knownZero(segmentStart, b)) {
        const offset = segmentStart * this.blockSize;
        await this.zeroLocally(offset, Math.min(b * this.blockSize, this.size) - offset);
      }
      this.map.markPresent(segmentStart, b - segmentStart);
      this.zeroPresent.setRange(segmentStart, b - segmentStart);
    }
  }

  /** Reported as speculative where the upstream can tell (failover's log): no guest read fails with it. */
  private readSpeculative(offset: number, length: number): Promise<Buffer> {
    const upstream = this.upstream as Partial<{ readSpeculative(offset: number, length: number): Promise<Buffer> }>;
    return upstream.readSpeculative ? upstream.readSpeculative.call(this.upstream, offset, length) : this.upstream.read(offset, length);
  }

  private knownZero(first: number, end: number): boolean {
    if (!this.map.header.diskCreatedSparse) return false;
    for (let b = first; b < end; b++) if (this.map.isModified(b)) return false;
    return true;
  }

  /** Writes zeros where the local disk is not already zero, 1 MiB at a time (bounded memory). */
  private async zeroLocally(offset: number, length: number): Promise<void> {
    const step = 1024 * 1024;
    for (let at = offset; at < offset + length; at += step) {
      const chunk = Math.min(step, offset + length - at);
      if (!isAllZero(await this.local.read(at, chunk))) await this.local.writeZeroes(at, chunk);
    }
  }

  /**
   * Fills `target` (from `offset`, blocks first..last) when every block is present or fetched but
   * not yet stored: unstored blocks from their fetched segment, the others from the local disk.
   */
  private async readAcrossFresh(offset: number, target: Buffer, first: number, last: number): Promise<void> {
    const end = offset + target.length;
    const fromDisk: Array<[number, number]> = [];
    for (let b = first; b <= last; b++) {
      const from = Math.max(offset, b * this.blockSize);
      const to = Math.min(end, (b + 1) * this.blockSize);
      const segment = this.unstored.get(b) ? this.fresh.find((s) => s.from <= b && b < s.to) : undefined;
      if (segment) {
        const segmentStart = segment.from * this.blockSize;
        segment.data.copy(target, from - offset, from - segmentStart, to - segmentStart);
        continue;
      }
      const previous = fromDisk[fromDisk.length - 1];
      if (previous && previous[1] === from) previous[1] = to;
      else fromDisk.push([from, to]);
    }
    for (const [from, to] of fromDisk) await this.local.readInto(from, target.subarray(from - offset, to - offset));
  }

  /** The bytes [offset, offset + length) from a fetched segment not yet stored, if one covers them wholly (see `fresh`). */
  private freshCovering(offset: number, length: number): Buffer | undefined {
    const end = offset + length;
    for (const run of this.fresh) {
      const runStart = run.from * this.blockSize;
      if (runStart <= offset && runStart + run.data.length >= end) return run.data.subarray(offset - runStart, end - runStart);
    }
    return undefined;
  }

  private allPresent(first: number, last: number): boolean {
    const absent = this.map.nextAbsent(first);
    return absent < 0 || absent > last;
  }

  private firstBusy(first: number, last: number): Promise<void> | undefined {
    for (let b = first; b <= last; b++) {
      const pending = this.busy.get(b);
      if (pending) return pending;
    }
    return undefined;
  }

  private coversBlock(offset: number, length: number, block: number): boolean {
    const start = block * this.blockSize;
    const end = Math.min(start + this.blockSize, this.size);
    return offset <= start && offset + length >= end;
  }

  private blockRange(offset: number, length: number): [number, number] {
    return [Math.floor(offset / this.blockSize), Math.floor((offset + length - 1) / this.blockSize)];
  }

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new BlockError('EINVAL', `request ${offset}+${length} beyond the disk's ${this.size} bytes`);
    }
    if (this.closed) throw new BlockError('ESHUTDOWN', 'the copy-on-read device is closing');
  }

  private async asGuest<T>(body: () => Promise<T>): Promise<T> {
    this.guestRequests++;
    try {
      return await body();
    } finally {
      this.guestRequests--;
      if (this.activeGuestRequests === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const wake of waiters) wake();
      }
    }
  }

  private log(line: string): void {
    this.options.log?.(line);
  }
}

interface FetchedSegment { readonly from: number; readonly to: number; readonly data: Buffer }

/** Lends a view of fetched memory: a hold keeps it out of the buffer pool until it is sent. */
function lendBytes(data: Buffer): LentBytes {
  retainShared(data);
  return { data, release: () => releaseShared(data) };
}
