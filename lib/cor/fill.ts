// Background fill (the provisioner): fetches the absent blocks in order, below guest I/O (it waits
// while guest requests run), rate-limited, never touching a present block (so never a block the
// guest wrote). The map is the state, so a restarted fill resumes where the last one stopped.
import { setTimeout as sleep } from 'node:timers/promises';
import type { CorBackend } from './cor-backend.js';

export interface FillProgress {
  readonly presentBlocks: number;
  readonly totalBlocks: number;
  readonly fetchedBytes: number;
  readonly done: boolean;
}

export interface FillOptions {
  /** Bytes per second; 0 = unlimited. */
  readonly rate?: number;
  /** Blocks per fetch (default: 4 MiB worth). */
  readonly runBytes?: number;
  /** Fetches in flight (default 4). */
  readonly workers?: number;
  /** Give up on the first failed fetch (the CLI) instead of retrying after a pause (a device). */
  readonly stopOnError?: boolean;
  readonly log?: (line: string) => void;
  readonly onProgress?: (progress: FillProgress) => void;
}

export class Filler {
  private stopped = false;
  private cursor = 0;
  private readonly startedAt = Date.now();
  private bytesReserved = 0;

  constructor(private readonly backend: CorBackend, private readonly options: FillOptions = {}) {}

  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<void> {
    const workers = Array.from({ length: this.options.workers ?? 4 }, () => this.work());
    await Promise.all(workers);
    this.report(!this.stopped);
  }

  private nextRange(): [number, number] | undefined {
    const map = this.backend.map;
    const first = map.nextAbsent(this.cursor);
    if (first < 0) return undefined;
    const { blockSize } = this.backend.manifest;
    // Under a rate limit, smaller runs keep the flow smooth (about 4 requests per second's budget).
    const rate = this.options.rate ?? 0;
    const runBytes = this.options.runBytes ?? (rate > 0 ? Math.min(4 * 1024 * 1024, Math.max(blockSize, rate / 4)) : 4 * 1024 * 1024);
    const maxBlocks = Math.max(1, Math.floor(runBytes / blockSize));
    let last = first;
    while (last + 1 < map.blockCount && last + 1 - first < maxBlocks && !map.isPresent(last + 1)) last++;
    this.cursor = last + 1;
    return [first, last];
  }

  private async work(): Promise<void> {
    while (!this.stopped) {
      await this.backend.whenGuestIdle();
      const range = this.nextRange();
      if (!range) return;
      const [first, last] = range;
      await this.throttle((last - first + 1) * this.backend.manifest.blockSize);
      if (this.stopped) return;
      try {
        await this.backend.ensurePresent(first, last, 'background');
      } catch (error) {
        if (this.options.stopOnError) { this.stopped = true; throw error; }
        this.options.log?.(`fill: blocks ${first}..${last} failed, retrying in 2 s: ${(error as Error).message}`);
        this.cursor = Math.min(this.cursor, first);
        await sleep(2000);
        continue;
      }
      this.report(false);
    }
  }

  /**
   * Reserves `bytes` of the budget before the fetch and sleeps until the budget allows it, so the
   * rate holds from the first request on (no burst after a restart). Counts image bytes covered.
   */
  private async throttle(bytes: number): Promise<void> {
    const rate = this.options.rate ?? 0;
    const startAt = this.bytesReserved;
    this.bytesReserved += bytes;
    if (rate <= 0) return;
    const dueMs = (startAt / rate) * 1000 - (Date.now() - this.startedAt);
    if (dueMs > 0) await sleep(dueMs);
  }

  private report(done: boolean): void {
    const counts = this.backend.map.counts();
    this.options.onProgress?.({ presentBlocks: counts.present, totalBlocks: counts.total, fetchedBytes: this.backend.counters.fetchedBytes, done });
  }
}
