// Copy-on-read layer: a BlockBackend over (local raw disk + block map + verified upstream), the
// face the NBD server serves to QEMU. Read: present blocks come from the local disk; absent ones
// are made present by the absent fetcher (absent-fetcher.ts), and the guest reads waiting for
// them are answered from the fetched memory (fresh-segments.ts) before the local store. A
// sequential reader is fetched ahead of, within a budget (fetch-ahead.ts). Write: W-intent first
// (durable), then the data, then R. The durability rules are stated and enforced in
// lib/map/block-map.ts; this file keeps rule 2 (W before data) and rule 3 (FLUSH = commit).
// Every change to an absent block goes through the claims (block-claims.ts: the locking rule).
import { BlockError, type BlockBackend, type BlockCapabilities, type Extent, type WriteOptions } from '../block/backend.js';
import type { BlockMap } from '../map/block-map.js';
import type { Manifest } from '../repo/manifest-format.js';
import { retainShared, releaseShared } from '../fetch/shared-buffers.js';
import type { Priority } from './fetch-queue.js';
import type { LocalDisk } from './local-disk.js';
import { FetchAhead, type FetchAheadCounters } from './fetch-ahead.js';
import { GuestDemand } from './guest-demand.js';
import { GuestActivity } from './guest-activity.js';
import { BlockClaims } from './block-claims.js';
import { FreshSegments } from './fresh-segments.js';
import { ZeroBlocks } from './zero-blocks.js';
import { AbsentFetcher, type FetchCounters } from './absent-fetcher.js';
import { startMapCommitTimer, type MapCommitTimer } from './map-commit-timer.js';
import { TraceRecorder, type TraceRecorderOptions } from './trace-recorder.js';
import { TraceReplay, type TraceReplayOptions } from './trace-replay.js';
import type { BootTrace } from '../trace/trace-format.js';
import { ReadThrough } from './read-through.js';
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

export interface CorCounters extends FetchCounters {
  readRequests: number;
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
  private readonly blockSize: number;
  private readRequests = 0;
  private readonly zeros: ZeroBlocks;
  private readonly claims = new BlockClaims();
  private readonly fresh: FreshSegments;
  private readonly fetcher: AbsentFetcher;
  private readonly fetchAhead: FetchAhead;
  private readonly demand: GuestDemand;
  private readonly guests: GuestActivity;
  private readonly commitTimer: MapCommitTimer;
  private readonly maxRunBlocks: number;
  private readonly log: (line: string) => void;
  /** Boot trace hooks (boot-tracing.ts): the guest's first reads recorded, a trace replayed ahead. */
  private recorder: TraceRecorder | undefined;
  /** Told of every guest write once its data landed (the replicator's "changed since upload"). */
  private readonly writeWatchers = new Set<(first: number, last: number) => void>();
  private replay: TraceReplay | undefined;
  private readonly readThrough: ReadThrough;
  /**
   * The single-writer rule (read-through.ts): once QEMU's native graph has the local disk (after
   * the pivot), QEMU is its only writer. From enterReadThrough() on, this backend never writes the
   * disk or the map: reads go through ReadThrough (fetched, verified, returned, not stored); guest
   * writes, fetch ahead, trace replay and ensurePresent (the fill) are refused. It never goes back.
   */
  private readThroughMode = false;
  private closed = false;

  constructor(
    readonly manifest: Manifest,
    private readonly local: LocalDisk,
    readonly map: BlockMap,
    upstream: BlockBackend,
    options: CorBackendOptions = {},
  ) {
    const log = options.log ?? (() => {});
    this.size = manifest.size;
    this.blockSize = manifest.blockSize;
    this.constraints = { minimum: 1, preferred: Math.min(this.blockSize, 65536), maximum: 32 * 1024 * 1024 };
    this.zeros = new ZeroBlocks(manifest, map);
    this.fresh = new FreshSegments(manifest.blockCount, this.blockSize);
    const maxRunBlocks = Math.max(1, Math.floor((options.maxFetchBytes ?? 4 * 1024 * 1024) / this.blockSize));
    this.maxRunBlocks = maxRunBlocks;
    this.log = log;
    this.guests = new GuestActivity(() => this.fetcher.guestWaiting);
    this.fetcher = new AbsentFetcher(
      { size: this.size, blockSize: this.blockSize, map, local, upstream, claims: this.claims, fresh: this.fresh, zeros: this.zeros, log },
      { maxRunBlocks, maxInFlight: options.maxInFlight ?? 8, holdForTurn: () => this.guests.requests > MERGE_TURN_MIN_GUEST_REQUESTS },
    );
    const dataBytes = (block: number) => this.zeros.dataBytes(block);
    this.demand = new GuestDemand(manifest.blockCount, dataBytes, (block) => map.isModified(block));
    this.fetchAhead = new FetchAhead({
      maxWindowBlocks: Math.floor((options.fetchAheadBytes ?? 8 * 1024 * 1024) / this.blockSize),
      maxRunBlocks,
      blockCount: manifest.blockCount,
      blockSize: this.blockSize,
      dataBytes,
      demandedBytes: () => this.demand.demandedBytes,
    });
    this.commitTimer = startMapCommitTimer(map, options.commitIntervalMs ?? 1000, log);
    this.readThrough = new ReadThrough({ size: this.size, blockSize: this.blockSize, map, local, upstream, zeros: this.zeros });
  }

  get counters(): Readonly<CorCounters> {
    const stored = this.fetcher.counters;
    const through = this.readThrough.counters;
    return {
      ...stored,
      fetchRequests: stored.fetchRequests + through.fetchRequests,
      fetchedBytes: stored.fetchedBytes + through.fetchedBytes,
      failedFetches: stored.failedFetches + through.failedFetches,
      readRequests: this.readRequests,
    };
  }

  /** True once the backend serves as the native graph's read-only backing (the single-writer rule). */
  get isReadThrough(): boolean {
    return this.readThroughMode;
  }

  /**
   * Switches to read-through for good (see readThroughMode): new requests see the mode at once;
   * resolves once the guest requests, fetches and stores already running have ended and the map
   * is durable. Call it with QEMU paused and the fill stopped: then nothing writes the disk after.
   */
  async enterReadThrough(): Promise<void> {
    this.readThroughMode = true;
    this.replay?.stop(); // a trace replay stores what it fetches
    await this.guests.whenIdle();
    await this.claims.settled();
    await this.map.commit();
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
    return this.guests.run(async () => {
      this.readRequests++;
      this.checkRange(offset, length);
      if (length === 0) return undefined;
      if (this.readThroughMode) return void (await this.readThrough.readInto(offset, target));
      const [first, last] = this.blockRange(offset, length);
      this.demand.need(first, last);
      this.recorder?.guestRead(first, last);
      this.replay?.guestRead(first, last);
      // A read of blocks fetched ahead, or a miss right after present or fetching blocks, is a
      // sequential reader: the window ahead of it is topped up (within the budget).
      const followsAhead = this.fetchAhead.guestRead(first, last);
      // The common case once warm: everything present, no promise juggling.
      if (!this.allPresent(first, last)) {
        const sequential = followsAhead || (first > 0 && (this.map.isPresent(first - 1) || this.claims.isClaimed(first - 1)));
        if (!followsAhead) this.fetchAhead.missed();
        const own = this.fetcher.ensurePresent(first, last, 'guest', 'readable');
        if (sequential) this.fetchAheadOf(last);
        await own;
        const fresh = this.fresh.covering(offset, length);
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
   * them; so are present blocks known to be still zero. Other blocks are read as usual (a present
   * block is not known to be zero: the guest may have written it, and W clear does not prove otherwise).
   */
  knownZeroRanges(offset: number, length: number): Array<readonly [number, number]> {
    // Read-through marks nothing present: its reader answers zero blocks from memory.
    if (this.closed || this.readThroughMode || length <= 0 || offset < 0 || offset + length > this.size) return [];
    const zeros = zeroBlockRanges(offset, length, this.blockSize, this.size, (b) => {
      if (this.zeros.isPresentZero(b)) return true;
      if (!this.readsAsZeroUnfetched(b)) return false;
      this.map.markPresent(b, 1);
      this.zeros.markPresentZero(b, 1);
      return true;
    });
    // The reply's data pieces around these holes are read one by one, each its own fetch: start
    // one fetch for all of them now (the pieces then wait for it). Its errors reach them there.
    if (zeros.length > 0) {
      const [first, last] = this.blockRange(offset, length);
      if (!this.allPresent(first, last)) this.fetcher.ensurePresent(first, last, 'guest', 'readable').catch(() => undefined);
    }
    return zeros;
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    await this.guests.run(() => this.modify(offset, data.length, () => this.local.write(offset, data), options));
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    await this.guests.run(() => this.modify(offset, length, () => this.local.writeZeroes(offset, length), options));
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
   * to be still zero: reported as such, so a client copying the disk (qemu-img convert, nbdcopy,
   * a QEMU block job) skips them without a fetch. Everything else is reported as data: a present
   * block is not known to be zero.
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
    return this.zeros.inImage(block) && !this.map.isPresent(block) && !this.claims.isClaimed(block) && this.zeros.stillHoles(block, block + 1);
  }

  private readsAsZero(block: number): boolean {
    return this.zeros.isPresentZero(block) || this.readsAsZeroUnfetched(block);
  }

  // ---- for fill and the device ----

  /** Fetches every absent block in [first, last] (inclusive); resolves once they are present. */
  ensurePresent(first: number, last: number, priority: Priority): Promise<void> {
    if (this.readThroughMode) return Promise.reject(this.singleWriterRefusal('make blocks present'));
    return this.fetcher.ensurePresent(first, last, priority);
  }

  /** Blocks still to fetch: absent, and not zero in the image. */
  absentDataBlocks(): number {
    let count = 0;
    for (let b = this.map.nextAbsent(0); b >= 0; b = this.map.nextAbsent(b + 1)) if (!this.zeros.inImage(b)) count++;
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

  /**
   * Calls `watcher(first, last)` after each guest write's data landed (blocks first..last). Told
   * after, not before: a reader that saw the old bytes is always told again. Returns the unwatch.
   */
  watchWrites(watcher: (first: number, last: number) => void): () => void {
    this.writeWatchers.add(watcher);
    return () => this.writeWatchers.delete(watcher);
  }

  /** Guest requests running or queued now; fill waits for zero. */
  get activeGuestRequests(): number {
    return this.guests.active;
  }

  /** Resolves when no guest request is running. */
  whenGuestIdle(): Promise<void> {
    return this.guests.whenIdle();
  }

  // ---- boot trace ----

  /** Records the guest's first reads from now on (trace-recorder.ts). */
  startRecording(options: Partial<TraceRecorderOptions> = {}): TraceRecorder {
    this.recorder = new TraceRecorder({ blockCount: this.manifest.blockCount, dataBytes: (b) => this.zeros.dataBytes(b), ...options });
    return this.recorder;
  }

  /** Fetches `trace`'s blocks ahead of the guest, below its own fetches (trace-replay.ts). */
  startReplay(trace: BootTrace, options: TraceReplayOptions = {}): TraceReplay {
    this.replay?.stop();
    const replay = new TraceReplay(trace, {
      blockCount: this.manifest.blockCount,
      blockSize: this.blockSize,
      dataBytes: (b) => this.zeros.dataBytes(b),
      claimable: (b) => !this.closed && !this.readThroughMode && !this.map.isPresent(b) && !this.claims.isClaimed(b),
      fetch: (start, count) => this.fetcher.startFetch(start, count, 'ahead'),
      maxRunBlocks: this.maxRunBlocks,
      log: this.log,
    }, options);
    this.replay = replay;
    replay.start();
    return replay;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.replay?.stop();
    this.commitTimer.stop();
    await this.claims.settled();
    await this.map.close();
    await this.local.close();
  }

  // ---- internals ----

  private singleWriterRefusal(what: string): BlockError {
    return new BlockError('EPERM', `cannot ${what}: the copy-on-read device is read-through (after the pivot QEMU is the only writer of the local disk)`);
  }

  private async modify(offset: number, length: number, apply: () => Promise<void>, options?: WriteOptions): Promise<void> {
    this.checkRange(offset, length);
    if (this.readThroughMode) throw this.singleWriterRefusal('write');
    if (length === 0) return;
    const [first, last] = this.blockRange(offset, length);
    // Partially covered absent blocks need their old content first (head / tail).
    const partial = [first, last].filter((b, i, all) => all.indexOf(b) === i && !this.coversBlock(offset, length, b));
    for (const block of partial) {
      this.demand.need(block, block);
      this.recorder?.guestRead(block, block);
      await this.fetcher.ensurePresent(block, block, 'guest');
    }
    this.fetchAhead.overwritten(first, last);
    this.recorder?.written(first, last);
    // Wait out fetches on the blocks we overwrite, then claim the absent ones synchronously.
    for (;;) {
      const pending = this.claims.firstHolder(first, last);
      if (!pending) break;
      await pending.catch(() => undefined);
    }
    const claimed: number[] = [];
    for (let b = first; b <= last; b++) if (!this.map.isPresent(b)) claimed.push(b);
    let done!: () => void;
    const writing = new Promise<void>((resolve) => { done = resolve; });
    for (const b of claimed) this.claims.claim(b, 1, writing);
    // No fetched segment overlaps [first, last] now: its blocks stay claimed until stored, and the
    // store drops it from the fresh segments before the wait above can end.
    this.zeros.forget(first, last - first + 1);
    try {
      // Rule 2: the W-intent is durable before the data write is issued.
      if (this.map.markModified(first, last - first + 1)) await this.map.commit();
      await apply();
      for (const b of claimed) this.map.markPresent(b, 1);
    } finally {
      // Also after a failed write: its bytes may have landed in part.
      for (const watcher of this.writeWatchers) watcher(first, last);
      for (const b of claimed) this.claims.release(b, 1, writing);
      done();
    }
    if (options?.fua) await this.map.commit();
  }

  /**
   * Fetches ahead of a guest read that ended at block `last`, if the window and the budget allow
   * (fetch-ahead.ts). Not for a reader with many requests in flight: the fetch queue merges those.
   */
  private fetchAheadOf(last: number): void {
    if (this.guests.requests > FETCH_AHEAD_MAX_GUEST_REQUESTS || this.closed || this.readThroughMode) return;
    const run = this.fetchAhead.plan(last, (b) => !this.map.isPresent(b) && !this.claims.isClaimed(b));
    if (!run) return;
    const [from, to] = run;
    // Its failure only matters to a later read, which fetches again (logged as speculative).
    this.fetcher.startFetch(from, to - from, 'ahead').catch(() => this.fetchAhead.failed(from, to));
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
      const segment = this.fresh.segmentOf(b);
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

  private allPresent(first: number, last: number): boolean {
    const absent = this.map.nextAbsent(first);
    return absent < 0 || absent > last;
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
}

/** Lends a view of fetched memory: a hold keeps it out of the buffer pool until it is sent. */
function lendBytes(data: Buffer): LentBytes {
  retainShared(data);
  return { data, release: () => releaseShared(data) };
}
