// Copy-on-read layer: a BlockBackend over (local raw disk + block map + verified upstream), the
// face the NBD server serves to QEMU. Read: present blocks come from the local disk; absent ones
// are made present by the absent fetcher (absent-fetcher.ts), and the guest reads waiting for
// them are answered from the fetched memory (fresh-segments.ts) before the local store. A
// sequential reader is fetched ahead of, within a budget (fetch-ahead.ts). Write: W-intent first
// (durable), then the data, then R. The durability rules are stated and enforced in
// lib/map/block-map.ts; guest-writes.ts keeps rule 2 (W before data), this file rule 3 (FLUSH =
// commit). Every change to an absent block goes through the claims (block-claims.ts: the locking
// rule). What reads as zeros is zero-status.ts; the mode after the pivot is read-through.ts.
// Over 300 lines because it is the device's composition root (it builds and wires the parts, and
// their callbacks close over its state) plus the guest read path that orders them.
import { GuestWaitClock } from './guest-wait.js';
import { BlockError, MAX_REQUEST_BYTES, type BlockBackend, type BlockCapabilities, type Extent, type WriteOptions } from '../block/backend.js';
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
import type { TraceRecorder, TraceRecorderOptions } from './trace-recorder.js';
import type { TraceReplay, TraceReplayOptions } from './trace-replay.js';
import { TraceHooks } from './trace-hooks.js';
import type { BootTrace } from '../trace/trace-format.js';
import { ReadThrough } from './read-through.js';
import { readByFilling, type KnowsZeroRanges, type LendsReads, type LentBytes } from '../block/read-into.js';
import { ZeroStatus } from './zero-status.js';
import { GuestWrites, type OverwriteGuard } from './guest-writes.js';
export type { OverwriteGuard } from './guest-writes.js';

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
  /** Boot trace hooks (boot-tracing.ts): the guest's first reads recorded, a trace replayed ahead. */
  private readonly traces: TraceHooks;
  /** Told of every guest write once its data landed (the replicator's "changed since upload"). */
  private readonly writeWatchers = new Set<(first: number, last: number) => void>();
  /** The single-writer rule after the pivot (read-through.ts): its reader, and the mode it gates. */
  private readonly readThrough: ReadThrough;
  private readonly zeroStatus: ZeroStatus;
  private readonly writes: GuestWrites;
  /** Time the guest's reads spent waiting on fetches (guest-wait.ts). */
  private readonly guestWait = new GuestWaitClock();
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
    this.constraints = { minimum: 1, preferred: Math.min(this.blockSize, 65536), maximum: MAX_REQUEST_BYTES };
    this.zeros = new ZeroBlocks(manifest, map);
    this.fresh = new FreshSegments(manifest.blockCount, this.blockSize);
    const maxRunBlocks = Math.max(1, Math.floor((options.maxFetchBytes ?? 4 * 1024 * 1024) / this.blockSize));
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
      // Through the host's block cache, the devices fetching ahead at once share one budget.
      sharers: () => (upstream as Partial<{ speculationSharers(): number }>).speculationSharers?.() ?? 1,
    });
    this.traces = new TraceHooks({
      blockCount: manifest.blockCount,
      blockSize: this.blockSize,
      dataBytes,
      claimable: (b) => !this.closed && !this.readThrough.active && !map.isPresent(b) && !this.claims.isClaimed(b),
      fetch: (start, count) => this.fetcher.startFetch(start, count, 'ahead'),
      maxRunBlocks,
      log,
    });
    this.commitTimer = startMapCommitTimer(map, options.commitIntervalMs ?? 1000, log);
    this.readThrough = new ReadThrough({ size: this.size, blockSize: this.blockSize, map, local, upstream, zeros: this.zeros });
    this.zeroStatus = new ZeroStatus({ size: this.size, blockSize: this.blockSize, map, claims: this.claims, zeros: this.zeros });
    this.writes = new GuestWrites({
      size: this.size, blockSize: this.blockSize, map, claims: this.claims, zeros: this.zeros,
      needOldContent: (block) => {
        this.demand.need(block, block);
        this.traces.partialWrite(block);
        return this.fetcher.ensurePresent(block, block, 'guest');
      },
      overwriting: (first, last) => {
        this.fetchAhead.overwritten(first, last);
        this.traces.written(first, last);
      },
      landed: (first, last) => {
        for (const watcher of this.writeWatchers) watcher(first, last);
      },
    });
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
    return this.readThrough.active;
  }

  /**
   * Switches to read-through for good (read-through.ts): new requests see the mode at once;
   * resolves once the guest requests, fetches and stores already running have ended and the map
   * is durable. Call it with QEMU paused and the fill stopped: then nothing writes the disk after.
   */
  async enterReadThrough(): Promise<void> {
    this.readThrough.enter();
    this.traces.stopReplay(); // a trace replay stores what it fetches
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
      if (this.readThrough.active) return void (await this.readThrough.readInto(offset, target));
      const [first, last] = this.blockRange(offset, length);
      this.demand.need(first, last);
      this.traces.guestRead(first, last);
      // A read of blocks fetched ahead, or a miss right after present or fetching blocks, is a
      // sequential reader: the window ahead of it is topped up (within the budget).
      const followsAhead = this.fetchAhead.guestRead(first, last);
      // The common case once warm: everything present, no promise juggling.
      if (!this.allPresent(first, last)) {
        const sequential = followsAhead || (first > 0 && (this.map.isPresent(first - 1) || this.claims.isClaimed(first - 1)));
        if (!followsAhead) this.fetchAhead.missed();
        const own = this.fetcher.ensurePresent(first, last, 'guest', 'readable');
        if (sequential) this.fetchAheadOf(last);
        await this.guestWait.time(own);
        const fresh = this.fresh.covering(offset, length);
        if (fresh && lend) return lendBytes(fresh);
        if (fresh) {
          fresh.copy(target);
          return undefined;
        }
        // Across fetched segments (or present blocks): each block from memory or the disk.
        if (!this.allPresent(first, last)) {
          await this.fresh.readAcross(offset, target, (from, part) => this.local.readInto(from, part));
          return undefined;
        }
      } else if (followsAhead) this.fetchAheadOf(last);
      // Always read the disk: W clear does not prove "equals the manifest" for a present block
      // (a replicator clears W once the guest's data is shipped). Holes read fast anyway.
      await this.local.readInto(offset, target);
      return undefined;
    });
  }

  /** The ranges the server answers as holes instead of reading them (zero-status.ts). */
  knownZeroRanges(offset: number, length: number): Array<readonly [number, number]> {
    // Read-through marks nothing present: its reader answers zero blocks from memory.
    if (this.closed || this.readThrough.active || length <= 0 || offset < 0 || offset + length > this.size) return [];
    const zeros = this.zeroStatus.knownZeroRanges(offset, length);
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
    const range = this.writes.trimmedRange(offset, length);
    if (range) await this.writeZeroes(range[0], range[1], options);
  }

  /** Rule 3: acknowledged only once data and map are durable. */
  async flush(): Promise<void> {
    await this.map.commit();
  }

  /** Zero and data extents, so a client copying the disk skips zeros without a fetch (zero-status.ts). */
  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.blockStatusNow(offset, length);
  }

  /** The same, answered at once (BlockBackend.blockStatusNow): the map and claims are in memory. */
  blockStatusNow(offset: number, length: number): Extent[] {
    return this.zeroStatus.blockStatus(offset, length);
  }

  // ---- for fill and the device ----

  /** Fetches every absent block in [first, last] (inclusive); resolves once they are present. */
  ensurePresent(first: number, last: number, priority: Priority): Promise<void> {
    if (this.readThrough.active) return Promise.reject(this.readThrough.refusal('make blocks present'));
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

  /** Milliseconds during which at least one guest read waited for a fetch. */
  get guestWaitedMs(): number {
    return this.guestWait.waitedMs;
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

  /**
   * Holds new guest writes; resolves, once the writes under way have ended, with the release. For
   * the instant of a point-in-time snapshot: keep it short (the guest's writes wait meanwhile).
   */
  holdWrites(): Promise<() => void> {
    return this.writes.hold();
  }

  /**
   * Runs `guard(first, last)` before each guest write's data lands; a returned promise holds the
   * write until it settles (copy-before-write). Returns the removal. One guard at a time.
   */
  guardOverwrites(guard: OverwriteGuard): () => void {
    return this.writes.guard(guard);
  }

  /** Guest requests running or queued now; fill waits for zero. */
  get activeGuestRequests(): number {
    return this.guests.active;
  }

  /** Resolves when no guest request is running. */
  whenGuestIdle(): Promise<void> {
    return this.guests.whenIdle();
  }

  /**
   * Block b reads right from the local disk: present, or an image zero block no one wrote (still a
   * hole on a disk created sparse with its map). The pivot's qcow2 maps these to the raw disk.
   */
  heldLocally(block: number): boolean {
    return this.map.isPresent(block) || (this.zeros.inImage(block) && this.zeros.stillHoles(block, block + 1));
  }

  /**
   * Resolves once the stores of fetched data and the guest writes running now have ended (their
   * blocks present, or absent again after a failed store): what a caller awaits instead of a sleep.
   */
  whenStoresSettled(): Promise<void> {
    return this.claims.settled();
  }

  // ---- boot trace ----

  /** Records the guest's first reads from now on (trace-recorder.ts). */
  startRecording(options: Partial<TraceRecorderOptions> = {}): TraceRecorder {
    return this.traces.startRecording(options);
  }

  /** Fetches `trace`'s blocks ahead of the guest, below its own fetches (trace-replay.ts). */
  startReplay(trace: BootTrace, options: TraceReplayOptions = {}): TraceReplay {
    return this.traces.startReplay(trace, options);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.traces.stopReplay();
    this.commitTimer.stop();
    await this.claims.settled();
    await this.map.close();
    await this.local.close();
  }

  // ---- internals ----

  private async modify(offset: number, length: number, apply: () => Promise<void>, options?: WriteOptions): Promise<void> {
    this.checkRange(offset, length);
    if (this.readThrough.active) throw this.readThrough.refusal('write');
    if (length === 0) return;
    await this.writes.write(offset, length, apply, options);
  }

  /**
   * Fetches ahead of a guest read that ended at block `last`, if the window and the budget allow
   * (fetch-ahead.ts). Not for a reader with many requests in flight: the fetch queue merges those.
   */
  private fetchAheadOf(last: number): void {
    if (this.guests.requests > FETCH_AHEAD_MAX_GUEST_REQUESTS || this.closed || this.readThrough.active) return;
    const run = this.fetchAhead.plan(last, (b) => !this.map.isPresent(b) && !this.claims.isClaimed(b));
    if (!run) return;
    const [from, to] = run;
    // Its failure only matters to a later read, which fetches again (logged as speculative).
    this.fetcher.startFetch(from, to - from, 'ahead').catch(() => this.fetchAhead.failed(from, to));
  }

  private allPresent(first: number, last: number): boolean {
    const absent = this.map.nextAbsent(first);
    return absent < 0 || absent > last;
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
