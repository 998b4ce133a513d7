// Fetch-ahead for the copy-on-read layer: speculation that pays for itself.
// When a guest reads sequentially (a miss right after blocks that are present or being fetched, or
// a read of blocks fetched ahead), the next absent blocks are fetched before the guest asks. They
// are fetched and stored like any other fetch (verified, written at their offset, then present),
// so nothing fetched ahead is ever thrown away and fetched again: no byte crosses the link twice.
//
// THE BOUND (issue 11). Every block fetched ahead counts as "unread" until a guest read touches
// it. The bytes fetched ahead and still unread may never exceed a budget that grows only with
// what the guest itself needed (`demanded`: image data blocks it read or partially overwrote),
// and with the reader's current streak (bytes fetched ahead that it read in a row, with no miss
// between: a reader proven sequential may keep as much ahead as it just read, up to one window,
// and once the streak is long a quarter of it, up to LONG_STREAK_WINDOWS windows):
//
//     credit(streak) = max(min(STREAK_CAP_BYTES, streak), min(LONG_STREAK_WINDOWS × window, streak / 4))
//     unread ahead ≤ BUDGET_FLOOR_BYTES + BUDGET_SHARE × demanded + credit(streak)
//
// The streak ends at the first read that misses (needs a fetch) without touching data fetched
// ahead; from then on the credit is gone and nothing more is fetched ahead until the unread bytes
// are back under the rest of the budget. Bytes fetched = demand fetches + fetched ahead ≤
// demanded + unread ahead, so at every moment
//
//     bytes fetched ≤ (1 + BUDGET_SHARE) × demanded + BUDGET_FLOOR_BYTES + credit(streak)
//
// (plus runs of ≤ MAX_ZERO_GAP_BLOCKS zero blocks read along between data blocks), and the last
// term is paid only by a reader that has just read at least that much ahead data in a row (four
// times as much for the grown window: what it may leave unread is ≤ 25% of the streak). A
// booting guest reads in short runs (files): replayed offline on a recorded Debian boot, the
// streak credit changed its bytes fetched by < 1% (1.13× of what it needed, with or without it),
// under the 1.2× the boot test asserts, while a sequential copy gets its full window after a few
// MiB instead of after ~60 MiB. The grown window is for a long copy over a far link: at 10 ms per
// request the guest-like reader of bench-cor waited on fetches 0.13-0.15 s per cold 256 MiB with
// it and 0.28-0.42 s with the 8 MiB window alone (at 2 ms: 0.03-0.12 s against 0.05-0.31 s). A
// reader that jumps about leaves the budget spent and earns no streak, and speculation stops
// until its own reads make room: the policy is judged by the share of it that the guest then read.
//
// SHARED BY THE HOST. Devices that share the host's block cache fetch every block once for the host,
// but each speculates where its own guest reads: N boots at once would keep N budgets of unread
// bytes in N places. So the budget is divided by the number of devices reading through the cache
// at the moment (`sharers`, lib/cache/speculation-peers.ts), streak credit included: in 4
// Debian boots at once, most of each device's unread bytes were streak credit (followers read
// blocks fetched ahead from the cache in a row), so dividing only the floor and share changed
// nothing over the link (bench-boot (k)). One reader alone keeps its whole budget:
//
//     unread ahead ≤ (BUDGET_FLOOR_BYTES + BUDGET_SHARE × demanded + min(STREAK_CAP_BYTES, streak)) / sharers
import { Bitset } from '../map/bitset.js';

/** Unread fetched-ahead bytes allowed before the guest has demanded anything. */
export const BUDGET_FLOOR_BYTES = 2 * 1024 * 1024;
/** Unread fetched-ahead bytes allowed per byte the guest demanded. */
export const BUDGET_SHARE = 0.1;
/** Most unread fetched-ahead bytes a streak of reads of fetched-ahead data earns (one full window). */
export const STREAK_CAP_BYTES = 8 * 1024 * 1024;
/**
 * A long streak grows the window: to a quarter of the streak, up to this many base windows
 * (32 MiB). A booting guest's streaks are files (a few MiB), so its window stays the base one.
 */
export const LONG_STREAK_WINDOWS = 4;
/** The window grows to streak / LONG_STREAK_SHARE: what it may leave unread is ≤ 25% of the streak. */
export const LONG_STREAK_SHARE = 4;
/**
 * The window is refilled in pieces of a quarter of it (2 MiB of an 8 MiB window): the nearest piece
 * lands sooner, and a reader catching up with the window waits for a smaller fetch. Measured on
 * bench-cor's guest-like reader at 2 ms per request: halves (4 MiB pieces, 70 fetches per 256 MiB)
 * left the reader waiting 220-430 ms per cold read, quarters (135 fetches) 75-150 ms; the boot-like
 * reader and the bulk copy were unchanged.
 */
export const REFILL_PIECES = 4;

/**
 * What a streak of `streakBytes` read ahead in a row earns: as much as it read, up to one window
 * (STREAK_CAP_BYTES); once the streak is long, a quarter of it, up to LONG_STREAK_WINDOWS windows.
 */
export function streakCreditBytes(streakBytes: number, windowBytes: number): number {
  return Math.max(Math.min(STREAK_CAP_BYTES, streakBytes), longStreakBytes(streakBytes, windowBytes));
}

/** What a long streak grows the window to: a quarter of it, up to LONG_STREAK_WINDOWS windows. */
function longStreakBytes(streakBytes: number, windowBytes: number): number {
  return Math.min(LONG_STREAK_WINDOWS * windowBytes, streakBytes / LONG_STREAK_SHARE);
}

export interface FetchAheadOptions {
  /** Largest window fetched ahead of a sequential reader, in blocks (0 = off). */
  readonly maxWindowBlocks: number;
  /** Largest single fetch, in blocks. */
  readonly maxRunBlocks: number;
  readonly blockCount: number;
  readonly blockSize: number;
  /** Bytes of image data in block b (0 for an all-zero block; the last block may be short). */
  readonly dataBytes: (block: number) => number;
  /** Bytes of image data the guest has needed so far (see guest-demand.ts). */
  readonly demandedBytes: () => number;
  /** Devices on this host reading through one block cache now, this one included (default 1). */
  readonly sharers?: () => number;
}

export interface FetchAheadCounters {
  /** Data bytes fetched ahead of the guest. */
  aheadFetchedBytes: number;
  /** Of those, bytes the guest then read. */
  aheadReadBytes: number;
}

export class FetchAhead {
  readonly counters: FetchAheadCounters = { aheadFetchedBytes: 0, aheadReadBytes: 0 };
  /** Blocks fetched (or being fetched) ahead that no guest read has touched yet. */
  private readonly unread: Bitset;
  private unreadBlocks = 0;
  private unreadBytes = 0;
  /** Bytes fetched ahead that guest reads touched in a row, since the last miss (see THE BOUND). */
  private streakBytes = 0;

  constructor(private readonly options: FetchAheadOptions) {
    this.unread = new Bitset(options.blockCount);
  }

  /** Unread fetched-ahead bytes the budget allows now (THE BOUND above). */
  get allowedBytes(): number {
    const sharers = Math.max(1, this.options.sharers?.() ?? 1);
    return (BUDGET_FLOOR_BYTES + BUDGET_SHARE * this.options.demandedBytes() + this.streakCreditBytes) / sharers;
  }

  private get streakCreditBytes(): number {
    return streakCreditBytes(this.streakBytes, this.options.maxWindowBlocks * this.options.blockSize);
  }

  /** The window now, in blocks: the base one, grown by a long streak. */
  private get windowLimitBlocks(): number {
    const { maxWindowBlocks, blockSize } = this.options;
    return Math.max(maxWindowBlocks, Math.floor(longStreakBytes(this.streakBytes, maxWindowBlocks * blockSize) / blockSize));
  }

  /** A guest read had to fetch and touched nothing fetched ahead: the reader's streak ends. */
  missed(): void {
    this.streakBytes = 0;
  }

  /**
   * A guest read of [first, last]: its blocks fetched ahead count as read (and extend the
   * reader's streak). True if any did (the reader is following the window: top it up).
   */
  guestRead(first: number, last: number): boolean {
    if (this.unreadBlocks === 0) return false;
    let hit = false;
    for (let b = first; b <= last; b++) {
      if (!this.unread.get(b)) continue;
      this.unread.clear(b);
      const bytes = this.options.dataBytes(b);
      this.unreadBlocks--;
      this.unreadBytes -= bytes;
      this.counters.aheadReadBytes += bytes;
      this.streakBytes += bytes;
      hit = true;
    }
    return hit;
  }

  /** The guest overwrote these blocks whole: fetched ahead for nothing, their bytes stay spent. */
  overwritten(first: number, last: number): void {
    if (this.unreadBlocks === 0) return;
    for (let b = first; b <= last; b++) {
      if (!this.unread.get(b)) continue;
      this.unread.clear(b);
      this.unreadBlocks--;
    }
  }

  /**
   * The run to fetch ahead after a guest read ending at `last`, within the window and the budget,
   * or undefined. `claimable(b)`: b is absent and no fetch or write holds it. The caller claims
   * and fetches the run, and reports a failed fetch with `failed`.
   */
  plan(last: number, claimable: (block: number) => boolean): readonly [number, number] | undefined {
    const { maxWindowBlocks, maxRunBlocks, blockCount, blockSize, dataBytes } = this.options;
    if (maxWindowBlocks <= 0) return undefined;
    // The window is what the budget allows in all; what is already fetched ahead sits inside it,
    // and only the room left may be fetched now.
    const allowed = this.allowedBytes;
    const room = allowed - this.unreadBytes;
    const windowBlocks = Math.min(this.windowLimitBlocks, Math.floor(allowed / blockSize));
    if (windowBlocks < 2 || room < 2 * blockSize) return undefined;
    const windowEnd = Math.min(blockCount, last + 1 + windowBlocks);
    const largestPiece = Math.min(maxRunBlocks, Math.max(2, Math.floor(maxWindowBlocks / REFILL_PIECES)));
    // The first block of the window that still needs data.
    let from = last + 1;
    while (from < windowEnd && !(claimable(from) && dataBytes(from) > 0)) from++;
    if (from >= windowEnd) return undefined;
    // Extend over absent blocks (zero ones cost nothing) within the room.
    let to = from;
    let bytes = 0;
    let dataBlocks = 0;
    let boundary = false;
    while (to < windowEnd) {
      // A present or busy block, or the largest piece, ends the piece whatever its size.
      if (to - from >= largestPiece || !claimable(to)) { boundary = true; break; }
      const blockBytes = dataBytes(to);
      if (bytes + blockBytes > room) break;
      bytes += blockBytes;
      if (blockBytes > 0) dataBlocks++;
      to++;
    }
    if (to >= blockCount) boundary = true;
    while (to > from && dataBytes(to - 1) === 0) to--;
    // Refilled in whole pieces (few requests), unless something else ends the piece first.
    const minPiece = Math.min(largestPiece, Math.max(2, Math.floor(windowBlocks / REFILL_PIECES)));
    if (dataBlocks < (boundary ? 2 : minPiece)) return undefined;
    for (let b = from; b < to; b++) {
      if (dataBytes(b) === 0 || this.unread.get(b)) continue;
      this.unread.set(b);
      this.unreadBlocks++;
    }
    this.unreadBytes += bytes;
    this.counters.aheadFetchedBytes += bytes;
    return [from, to];
  }

  /** A fetch ahead of [from, to) failed: its blocks were not fetched, their budget comes back. */
  failed(from: number, to: number): void {
    for (let b = from; b < to; b++) {
      if (!this.unread.get(b)) continue;
      this.unread.clear(b);
      const bytes = this.options.dataBytes(b);
      this.unreadBlocks--;
      this.unreadBytes -= bytes;
      this.counters.aheadFetchedBytes -= bytes;
    }
  }
}
