// Replays a boot trace ahead of the guest: fetches the trace's blocks in trace order, in the
// background, at most a window of the trace ahead of the furthest trace block the guest has read.
// Bounded: at most `maxInFlight` replay requests upstream at once (the fetch queue has more
// slots, so a guest miss always finds one, and queued guest runs go before queued replay runs),
// each at most one fetch long (blocks of the next stretch of the trace sorted and merged into
// runs; absent zero blocks between them are bridged, they cost no fetch). Memory is that of the
// fetches in flight: fetched blocks are stored like any other (verified, written, then present),
// so no block is ever fetched twice. Stops when the trace is done, when the guest has read its
// last block, or when told (the boot is up, the device closes).
import { Bitset } from '../map/bitset.js';
import type { BootTrace } from '../trace/trace-format.js';

export interface TraceReplayParts {
  readonly blockCount: number;
  readonly blockSize: number;
  /** Bytes of image data in block b (0 for an all-zero block). */
  readonly dataBytes: (block: number) => number;
  /** b is absent and no fetch or write holds it. */
  readonly claimable: (block: number) => boolean;
  /** Claims and fetches [start, start + count) below guest priority; resolves when present. */
  readonly fetch: (start: number, count: number) => Promise<void>;
  /** Largest single fetch, in blocks. */
  readonly maxRunBlocks: number;
  readonly log: (line: string) => void;
}

export interface TraceReplayOptions {
  /** How far ahead of the guest the replay may run, in bytes of trace (default 32 MiB). */
  readonly windowBytes?: number;
  /** Replay requests upstream at once (default 4). */
  readonly maxInFlight?: number;
}

export interface TraceReplayCounters {
  /** Data blocks in the trace, and their bytes. */
  traceBlocks: number;
  traceBytes: number;
  /** Data bytes the replay fetched, and of those the bytes the guest then read. */
  replayFetchedBytes: number;
  replayReadBytes: number;
  /** Upstream requests of the replay. */
  replayRequests: number;
}

type Run = readonly [start: number, count: number];

export class TraceReplay {
  readonly counters: TraceReplayCounters;
  private readonly order: readonly number[];
  /** Trace position of each block (-1: not in the trace). */
  private readonly position: Int32Array;
  /** Blocks the replay fetched that no guest read has touched yet. */
  private readonly unread: Bitset;
  /** Next trace position not yet planned. */
  private cursor = 0;
  /** Furthest trace position the guest has read. */
  private guestAt = -1;
  private pending: Run[] = [];
  private inFlight = 0;
  private stopped = false;
  private readonly windowBlocks: number;
  private readonly maxInFlight: number;
  private finished!: () => void;
  /** Resolves when the replay has stopped and its fetches have settled. */
  readonly done: Promise<void>;

  constructor(trace: BootTrace, private readonly parts: TraceReplayParts, options: TraceReplayOptions = {}) {
    this.order = trace.entries.map((entry) => entry.block).filter((b) => b < parts.blockCount && parts.dataBytes(b) > 0);
    this.position = new Int32Array(parts.blockCount).fill(-1);
    this.order.forEach((block, index) => { if (this.position[block] === -1) this.position[block] = index; });
    this.unread = new Bitset(parts.blockCount);
    this.windowBlocks = Math.max(1, Math.floor((options.windowBytes ?? 32 * 1024 * 1024) / parts.blockSize));
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 4);
    this.counters = { traceBlocks: this.order.length, traceBytes: this.order.reduce((sum, b) => sum + parts.dataBytes(b), 0), replayFetchedBytes: 0, replayReadBytes: 0, replayRequests: 0 };
    this.done = new Promise((resolve) => { this.finished = resolve; });
  }

  start(): void {
    this.pump();
  }

  /** Whether the replay still fetches. */
  get running(): boolean {
    return !this.stopped;
  }

  /** A guest read of [first, last]: moves the window, counts replayed blocks as used. */
  guestRead(first: number, last: number): void {
    for (let b = first; b <= last; b++) {
      const at = this.position[b]!;
      if (at > this.guestAt) this.guestAt = at;
      if (!this.unread.get(b)) continue;
      this.unread.clear(b);
      this.counters.replayReadBytes += this.parts.dataBytes(b);
    }
    if (this.stopped) return;
    if (this.guestAt >= this.order.length - 1) {
      this.stop();
      return;
    }
    this.pump();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.pending = [];
    this.settleIfIdle();
  }

  private pump(): void {
    while (!this.stopped && this.inFlight < this.maxInFlight) {
      if (this.pending.length === 0) this.plan();
      const run = this.pending.shift();
      if (!run) break;
      this.issue(run);
    }
    if (!this.stopped && this.inFlight === 0 && this.pending.length === 0 && this.cursor >= this.order.length) this.stop();
  }

  /**
   * The next stretch of the trace within the window (at most one fetch of blocks still to fetch),
   * sorted and cut into runs of adjacent blocks, in the order the trace first needs them.
   */
  private plan(): void {
    const limit = Math.min(this.order.length, this.guestAt + 1 + this.windowBlocks);
    const blocks: number[] = [];
    while (this.cursor < limit && blocks.length < this.parts.maxRunBlocks) {
      const block = this.order[this.cursor++]!;
      if (this.parts.claimable(block)) blocks.push(block);
    }
    if (blocks.length === 0) return;
    const firstNeed = new Map(blocks.map((block, index) => [block, index]));
    blocks.sort((a, b) => a - b);
    const runs: Array<{ run: Run; need: number }> = [];
    let start = blocks[0]!;
    let end = start + 1;
    let need = firstNeed.get(start)!;
    const flush = () => runs.push({ run: [start, end - start], need });
    for (const block of blocks.slice(1)) {
      if (block - start < this.parts.maxRunBlocks && this.bridges(end, block)) {
        end = block + 1;
        need = Math.min(need, firstNeed.get(block)!);
        continue;
      }
      flush();
      start = block;
      end = block + 1;
      need = firstNeed.get(block)!;
    }
    flush();
    this.pending = runs.sort((a, b) => a.need - b.need).map((entry) => entry.run);
  }

  /** Whether the blocks [from, to) between two runs cost nothing to fetch along (absent zero blocks). */
  private bridges(from: number, to: number): boolean {
    for (let b = from; b < to; b++) if (this.parts.dataBytes(b) > 0 || !this.parts.claimable(b)) return false;
    return true;
  }

  /** Fetches the still claimable parts of `run` (the guest may have fetched some meanwhile). */
  private issue([start, count]: Run): void {
    for (let b = start; b < start + count;) {
      if (!this.parts.claimable(b)) { b++; continue; }
      const from = b;
      while (b < start + count && this.parts.claimable(b)) b++;
      this.fetch(from, b);
    }
  }

  private fetch(from: number, to: number): void {
    let bytes = 0;
    for (let b = from; b < to; b++) {
      const blockBytes = this.parts.dataBytes(b);
      if (blockBytes === 0) continue;
      this.unread.set(b);
      bytes += blockBytes;
    }
    if (bytes === 0) return;
    this.counters.replayFetchedBytes += bytes;
    this.counters.replayRequests++;
    this.inFlight++;
    this.parts.fetch(from, to - from).catch((error: Error) => {
      // Not fetched: their bytes do not count; a guest read fetches them itself.
      for (let b = from; b < to; b++) {
        if (!this.unread.get(b)) continue;
        this.unread.clear(b);
        this.counters.replayFetchedBytes -= this.parts.dataBytes(b);
      }
      this.parts.log(`boot trace replay: blocks ${from}..${to - 1} not fetched (${error.message}); the guest fetches what it needs itself`);
    }).finally(() => {
      this.inFlight--;
      this.pump();
      this.settleIfIdle();
    });
  }

  private settleIfIdle(): void {
    if (this.stopped && this.inFlight === 0) this.finished();
  }
}
