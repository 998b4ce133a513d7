// The background provisioner after the pivot, as a QMP block job: `block-stream` on the native
// qcow2 node copies every cluster still unallocated from its backing (the read-through COR device)
// into the local disk, rate-limited (`speed`, changeable with block-job-set-speed), pausable.
// Progress comes from query-block-jobs; the end from BLOCK_JOB_COMPLETED. Once it completes the
// qcow2 has no backing: the NBD node to the COR device is deleted, and QEMU alone has the disk.
// A read error (the repository is away) does not end the job: `on-error: stop` pauses it
// (BLOCK_JOB_ERROR), and it is resumed every few seconds until the reads succeed again; an
// outage that lasts is reported once (onStalled), and the job goes on waiting up to a limit
// (`giveUpAfterMs`): past it the job is cancelled and `done` rejects with FillJobFailed saying
// what happened and what to do (what was filled stays; a later boot of the disk finishes it).
import { NATIVE_BACKING_NODE, NATIVE_NODE } from './native-graph.js';
import type { QmpClient, QmpEvent } from './qmp.js';
import { FillJobFailed } from './errors.js';

export const FILL_JOB_ID = 'lazyboot-fill';
const PROGRESS_POLL_MS = 1000;
/** After a read error, how long the paused job waits before it tries again. */
export const FILL_RETRY_MS = 3000;
/** An outage longer than this is reported (the job keeps waiting for the repository). */
export const FILL_STALL_REPORT_MS = 30_000;
/** Default: an outage longer than this cancels the job (the guest runs on; a later boot finishes the fill). */
export const FILL_GIVE_UP_MS = 10 * 60_000;

export interface FillJobProgress {
  /** Bytes done (already-allocated clusters count as done at once) and the total. */
  readonly offset: number;
  readonly len: number;
  /** Bytes per second allowed; 0 = unlimited. */
  readonly speed: number;
  readonly paused: boolean;
}

/** What the job tells besides progress: a read error paused it, it has been stalled long, it runs again. */
export interface FillJobTrouble {
  /** How long the repository may stay away before the job is cancelled (default FILL_GIVE_UP_MS). */
  readonly giveUpAfterMs?: number;
  onErrorPaused?(detail: string): void;
  onStalled?(sinceMs: number, detail: string): void;
  onResumed?(afterMs: number): void;
}

interface QueriedJob {
  readonly device: string;
  readonly offset: number;
  readonly len: number;
  readonly speed: number;
  readonly paused: boolean;
}

export class FillJob {
  /** Resolves when the job completed and the backing node is gone; rejects with FillJobFailed. */
  readonly done: Promise<void>;
  #stopPolling: () => void = () => {};
  /** Set while the job is paused by a read error: when that began, and the retry timer. */
  #errorPause: { since: number; reported: boolean; timer: NodeJS.Timeout | undefined } | undefined;
  #watching = true;
  #giveUp: (error: FillJobFailed) => void = () => {};

  private constructor(private readonly qmp: QmpClient, onProgress: (progress: FillJobProgress) => void, private readonly trouble: FillJobTrouble) {
    this.done = new Promise<void>((resolve, reject) => {
      this.#giveUp = (error) => {
        this.#stopPolling();
        reject(error);
      };
      const unsubscribe = qmp.onEvent((event: QmpEvent) => {
        if (event.event === 'BLOCK_JOB_ERROR' && event.data.device === FILL_JOB_ID) return this.#onReadError(String(event.data.operation ?? 'read'));
        if (event.event !== 'BLOCK_JOB_COMPLETED' || event.data.device !== FILL_JOB_ID) return;
        unsubscribe();
        this.#stopPolling();
        const { error, offset, len } = event.data as { error?: string; offset: number; len: number };
        if (error) return reject(new FillJobFailed(error));
        onProgress({ offset, len, speed: 0, paused: false });
        // The stream dropped the qcow2's backing: nothing uses the NBD node to the COR device now.
        qmp.execute('blockdev-del', { 'node-name': NATIVE_BACKING_NODE }).then(() => resolve(), (failure: Error) => reject(new FillJobFailed(`could not detach the copy-on-read device: ${failure.message}`)));
      });
      qmp.onClose((reason) => {
        this.#stopPolling();
        reject(new FillJobFailed(`QEMU went away (${reason})`));
      });
    });
    this.done.catch(() => {});
    const timer = setInterval(() => {
      qmp.execute<QueriedJob[]>('query-block-jobs').then((jobs) => {
        const job = jobs.find((candidate) => candidate.device === FILL_JOB_ID);
        if (!job) return;
        // Moving again after a read error: the repository is back.
        if (this.#errorPause && !job.paused && job.offset > (this.#errorPauseOffset ?? job.offset)) this.#onRecovered();
        onProgress({ offset: job.offset, len: job.len, speed: job.speed, paused: job.paused || this.#errorPause !== undefined });
      }, () => {});
    }, PROGRESS_POLL_MS);
    this.#stopPolling = () => {
      this.#watching = false;
      clearInterval(timer);
      clearTimeout(this.#errorPause?.timer);
    };
  }

  #errorPauseOffset: number | undefined;

  /** on-error: stop paused the job: try again in a while; report once if it lasts. */
  #onReadError(operation: string): void {
    if (!this.#watching) return;
    const detail = `a ${operation} from the repository failed`;
    if (!this.#errorPause) {
      this.#errorPause = { since: Date.now(), reported: false, timer: undefined };
      void this.#offsetNow().then((offset) => (this.#errorPauseOffset = offset));
      this.trouble.onErrorPaused?.(detail);
    }
    const pause = this.#errorPause;
    const stalledMs = Date.now() - pause.since;
    if (!pause.reported && stalledMs >= FILL_STALL_REPORT_MS) {
      pause.reported = true;
      this.trouble.onStalled?.(stalledMs, detail);
    }
    const limitMs = this.trouble.giveUpAfterMs ?? FILL_GIVE_UP_MS;
    if (stalledMs >= limitMs) {
      // Waited long enough: the job goes; what it filled stays (the map records it at the end).
      const seconds = Math.round(stalledMs / 1000);
      void this.qmp.execute('block-job-cancel', { device: FILL_JOB_ID, force: true }).catch(() => undefined);
      this.#giveUp(new FillJobFailed(`the repository was unreachable for ${seconds} s (${detail}; the fill waits ${Math.round(limitMs / 1000)} s)`));
      return;
    }
    clearTimeout(pause.timer);
    pause.timer = setTimeout(() => {
      if (this.#watching) this.resume().catch(() => undefined);
    }, FILL_RETRY_MS);
  }

  #onRecovered(): void {
    const pause = this.#errorPause!;
    clearTimeout(pause.timer);
    this.#errorPause = undefined;
    this.#errorPauseOffset = undefined;
    this.trouble.onResumed?.(Date.now() - pause.since);
  }

  async #offsetNow(): Promise<number | undefined> {
    const jobs = await this.qmp.execute<QueriedJob[]>('query-block-jobs').catch(() => []);
    return jobs.find((candidate) => candidate.device === FILL_JOB_ID)?.offset;
  }

  /** Starts block-stream on the native qcow2 node at `speed` bytes/s (0 = unlimited); a read error pauses it (see above). */
  static async start(qmp: QmpClient, options: { speed: number; onProgress?: (progress: FillJobProgress) => void } & FillJobTrouble): Promise<FillJob> {
    const job = new FillJob(qmp, options.onProgress ?? (() => {}), options);
    try {
      await qmp.execute('block-stream', { 'job-id': FILL_JOB_ID, device: NATIVE_NODE, speed: options.speed, 'on-error': 'stop' });
    } catch (error) {
      job.#stopPolling();
      throw new FillJobFailed((error as Error).message);
    }
    return job;
  }

  setSpeed(bytesPerSecond: number): Promise<unknown> {
    return this.qmp.execute('block-job-set-speed', { device: FILL_JOB_ID, speed: bytesPerSecond });
  }

  /** Pauses the job (e.g. before QEMU quits: no stream write is cut off). */
  pause(): Promise<unknown> {
    return this.qmp.execute('block-job-pause', { device: FILL_JOB_ID });
  }

  resume(): Promise<unknown> {
    return this.qmp.execute('block-job-resume', { device: FILL_JOB_ID });
  }

  stopWatching(): void {
    this.#stopPolling();
  }
}
