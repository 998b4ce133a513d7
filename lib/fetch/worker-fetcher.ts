// Main-thread side of the fetch worker (fetch-worker.ts): verified reads of several blocks from
// the repositories run in one worker thread per opened image, and come back as shared memory (no
// copy). Reads of a few blocks (a guest's scattered misses) stay in-process, hashed inline: a
// worker round trip would cost more than it saves, and a device that only ever fetches single
// blocks never starts the worker (~15-20 MiB of memory). If the worker dies, reads fall back to
// the in-process path.
import { Worker } from 'node:worker_threads';
import { BlockError, type BlockBackend, type BlockErrorCode } from '../block/backend.js';
import { ReadOnlyBackend } from '../block/read-only.js';
import { DigestMismatch } from './errors.js';
import { adoptShared } from './shared-buffers.js';
import { MIN_WORKER_BLOCKS } from './block-hasher.js';
import type { FetchWorkerError, FetchWorkerInit, FromFetchWorker, ToFetchWorker } from './fetch-worker.js';
import { FetchWorkerFailed } from './errors.js';

/**
 * Reads of at least this many bytes go to the worker (fetch-ahead runs, coalesced misses, fill):
 * the reads that would otherwise be hashed in a hash worker. Measured on a bulk copy, a higher
 * threshold (1 MiB) split reads between both paths and cost ~10% more CPU.
 */
export function workerReadThreshold(blockSize: number): number {
  return MIN_WORKER_BLOCKS * blockSize;
}

/** The worker's heap holds little (promises, NBD headers); its data is in shared memory. */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 32 };

/** How long close() waits for the worker's polite NBD disconnects before terminating it. */
const CLOSE_WAIT_MS = 2_000;

interface Waiting { resolve(data: Buffer): void; reject(error: Error): void }

export class FetchWorker {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 1;
  private failure: Error | undefined;
  private closed = false;
  /** Reads answered by the worker (with data or an error), and their buffers given back: for tests. */
  answered = 0;
  givenBack = 0;
  /**
   * A buffer that this thread drops without releasing it (a read that timed out, a caller that
   * forgot) is given back when it is garbage-collected: the worker holds it until then.
   */
  private readonly dropped = new FinalizationRegistry<number>((id) => this.giveBack(id));

  /** `log` gets one line if the worker stops on its own (reads then go on in-process). */
  constructor(private readonly init: FetchWorkerInit, private readonly log: (line: string) => void = () => {}) {}

  /** False once the worker died or was closed: callers read in-process instead. */
  get usable(): boolean {
    return this.failure === undefined && !this.closed;
  }

  /** Starts the worker now (its start-up would otherwise land on the first large read). */
  start(): void {
    if (this.worker || !this.usable) return;
    const worker = new Worker(new URL('./fetch-worker.js', import.meta.url), { workerData: this.init, resourceLimits: WORKER_LIMITS });
    worker.on('message', (message: FromFetchWorker) => this.answer(message));
    worker.on('error', (error) => this.stopped(error));
    worker.on('exit', (code) => this.stopped(new Error(`exited with code ${code}`)));
    // Only a read in flight keeps the process alive (a CLI that is done must be able to exit).
    worker.unref();
    this.worker = worker;
  }

  read(member: number, offset: number, length: number): Promise<Buffer> {
    this.start();
    const worker = this.worker;
    if (!worker || !this.usable) return Promise.reject(new FetchWorkerFailed(this.failure?.message ?? 'closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.waiting.size === 0) worker.ref();
      this.waiting.set(id, { resolve, reject });
      worker.postMessage({ type: 'read', id, member, offset, length } satisfies ToFetchWorker);
    });
  }

  /** Drops the member's connection in the worker (after a timeout): its next read reconnects. */
  reset(member: number, reason: string): void {
    this.worker?.postMessage({ type: 'reset', member, reason } satisfies ToFetchWorker);
  }

  /** Stops the thread at once: reads in flight are retried in-process (see WorkerBackedReader). */
  async terminate(): Promise<void> {
    const worker = this.worker;
    this.fail(new Error('terminated'));
    await worker?.terminate();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const worker = this.worker;
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage({ type: 'close' } satisfies ToFetchWorker);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), CLOSE_WAIT_MS); });
    if (await Promise.race([exited, late]) === 'late') await worker.terminate();
    clearTimeout(timer);
    this.fail(new BlockError('ESHUTDOWN', 'fetch worker closed'));
  }

  private answer(message: FromFetchWorker): void {
    const waiting = this.waiting.get(message.id);
    if (!waiting) {
      if (message.type === 'data') this.giveBack(message.id);
      return;
    }
    this.settle(message.id);
    this.answered++;
    if (message.type === 'error') {
      waiting.reject(rebuildError(message.error));
      return;
    }
    const data = Buffer.from(message.buffer, message.byteOffset, message.length);
    const token = {};
    this.dropped.register(message.buffer, message.id, token);
    waiting.resolve(adoptShared(data, () => {
      this.dropped.unregister(token);
      this.giveBack(message.id);
    }));
  }

  private giveBack(id: number): void {
    this.givenBack++;
    if (this.usable) this.worker?.postMessage({ type: 'free', id } satisfies ToFetchWorker);
  }

  private settle(id: number): void {
    this.waiting.delete(id);
    if (this.waiting.size === 0) this.worker?.unref();
  }

  /** The thread ended without close() or terminate(). */
  private stopped(error: Error): void {
    if (this.failure || this.closed) return;
    this.log(`fetch worker stopped (${error.message}): fetching on the main thread from now on`);
    this.fail(error);
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const [id, waiting] of this.waiting) {
      this.settle(id);
      waiting.reject(new FetchWorkerFailed(error.message, { cause: error }));
    }
  }
}

function rebuildError(error: FetchWorkerError): BlockError {
  if (error.name === 'DigestMismatch' && error.source !== undefined && error.block !== undefined) return new DigestMismatch(error.source, error.block);
  const rebuilt = new BlockError(error.code as BlockErrorCode, error.message);
  rebuilt.name = error.name;
  return rebuilt;
}

/**
 * One repository as a failover member: reads of several blocks through the worker, the rest (and all
 * reads once the worker is gone) through `inProcess`, the verified reader on this thread.
 */
export class WorkerBackedReader extends ReadOnlyBackend {
  readonly size: number;
  readonly constraints;

  constructor(
    private readonly fetcher: FetchWorker,
    private readonly member: number,
    private readonly inProcess: BlockBackend,
    private readonly minWorkerBytes: number,
    private readonly resetInProcess?: (reason: string) => void,
  ) {
    super();
    this.size = inProcess.size;
    this.constraints = inProcess.constraints;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (length >= this.minWorkerBytes && this.fetcher.usable) {
      try {
        return await this.fetcher.read(this.member, offset, length);
      } catch (error) {
        // A dead worker is not the repository's fault: no failover, the read goes on here.
        if (!(error instanceof FetchWorkerFailed)) throw error;
      }
    }
    return this.inProcess.read(offset, length);
  }

  reset(reason: string): void {
    this.resetInProcess?.(reason);
    this.fetcher.reset(this.member, reason);
  }

  async close(): Promise<void> {
    await this.inProcess.close();
  }
}
