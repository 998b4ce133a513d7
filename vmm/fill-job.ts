// The background provisioner after the pivot, as a QMP block job: `block-stream` on the native
// qcow2 node copies every cluster still unallocated from its backing (the read-through COR device)
// into the local disk, rate-limited (`speed`, changeable with block-job-set-speed), pausable.
// Progress comes from query-block-jobs; the end from BLOCK_JOB_COMPLETED. Once it completes the
// qcow2 has no backing: the NBD node to the COR device is deleted, and QEMU alone has the disk.
import { NATIVE_BACKING_NODE, NATIVE_NODE } from './native-graph.js';
import type { QmpClient, QmpEvent } from './qmp.js';
import { FillJobFailed } from './errors.js';

export const FILL_JOB_ID = 'lazyboot-fill';
const PROGRESS_POLL_MS = 1000;

export interface FillJobProgress {
  /** Bytes done (already-allocated clusters count as done at once) and the total. */
  readonly offset: number;
  readonly len: number;
  /** Bytes per second allowed; 0 = unlimited. */
  readonly speed: number;
  readonly paused: boolean;
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

  private constructor(private readonly qmp: QmpClient, onProgress: (progress: FillJobProgress) => void) {
    this.done = new Promise<void>((resolve, reject) => {
      const unsubscribe = qmp.onEvent((event: QmpEvent) => {
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
        if (job) onProgress({ offset: job.offset, len: job.len, speed: job.speed, paused: job.paused });
      }, () => {});
    }, PROGRESS_POLL_MS);
    this.#stopPolling = () => clearInterval(timer);
  }

  /** Starts block-stream on the native qcow2 node at `speed` bytes/s (0 = unlimited). */
  static async start(qmp: QmpClient, options: { speed: number; onProgress?: (progress: FillJobProgress) => void }): Promise<FillJob> {
    const job = new FillJob(qmp, options.onProgress ?? (() => {}));
    try {
      await qmp.execute('block-stream', { 'job-id': FILL_JOB_ID, device: NATIVE_NODE, speed: options.speed });
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
