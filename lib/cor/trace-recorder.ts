// Records a boot trace (lib/trace/trace-format.ts): the image data blocks the guest reads, each
// the first time, in order, with the time since the guest's first read. Blocks the guest wrote
// whole before reading them are left out (their image content was never needed), and so are
// all-zero blocks (never fetched). Recording stops at a cap (time or blocks) so that a guest left
// running records a boot, not its whole life.
import { Bitset } from '../map/bitset.js';
import type { TraceEntry } from '../trace/trace-format.js';

export interface TraceRecorderOptions {
  readonly blockCount: number;
  /** Bytes of image data in block b (0 for an all-zero block). */
  readonly dataBytes: (block: number) => number;
  /** Stop recording this long after the first read (default 10 minutes). */
  readonly maxMs?: number;
  /** Stop recording after this many blocks (default: 1 GiB of 64 KiB blocks). */
  readonly maxBlocks?: number;
  readonly now?: () => number;
}

export type TraceMilestone = 'storage-ready' | 'ready';

export class TraceRecorder {
  readonly entries: TraceEntry[] = [];
  /** Blocks read (recorded) or written before being read (left out). */
  private readonly seen: Bitset;
  private startedAt: number | undefined;
  private stopped = false;
  private readonly milestones = new Map<TraceMilestone, number>();
  private readonly now: () => number;

  constructor(private readonly options: TraceRecorderOptions) {
    this.seen = new Bitset(options.blockCount);
    this.now = options.now ?? (() => performance.now());
  }

  /** Whether blocks are still being recorded (not stopped, not capped). */
  get recording(): boolean {
    return !this.stopped;
  }

  /** The guest read (or partially overwrote: its old content was read) blocks [first, last]. */
  guestRead(first: number, last: number): void {
    if (this.stopped) return;
    const ms = this.elapsed(true);
    if (ms > (this.options.maxMs ?? 600_000)) return this.stop();
    for (let b = first; b <= last; b++) {
      if (this.seen.get(b)) continue;
      this.seen.set(b);
      if (this.options.dataBytes(b) === 0) continue;
      this.entries.push({ block: b, ms });
      if (this.entries.length >= (this.options.maxBlocks ?? 16384)) return this.stop();
    }
  }

  /** The guest wrote blocks [first, last] whole: those it had not read are never recorded. */
  written(first: number, last: number): void {
    if (this.stopped) return;
    for (let b = first; b <= last; b++) this.seen.set(b);
  }

  /** Notes when a milestone was reached (ms since the first read); the first time counts. */
  milestone(name: TraceMilestone): void {
    if (!this.milestones.has(name)) this.milestones.set(name, this.elapsed(false));
  }

  milestoneMs(name: TraceMilestone): number | undefined {
    return this.milestones.get(name);
  }

  stop(): void {
    this.stopped = true;
  }

  private elapsed(starting: boolean): number {
    if (this.startedAt === undefined) {
      if (!starting) return 0;
      this.startedAt = this.now();
    }
    return Math.max(0, Math.round(this.now() - this.startedAt));
  }
}
