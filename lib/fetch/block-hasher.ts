// SHA-256 of every block of a fetched run, off the event loop: a run in a SharedArrayBuffer goes
// to a worker thread (no copy), small or unshared runs are hashed inline. On a 2-core machine this
// moves the biggest single cost of a cold read (hashing) beside the thread that serves the guest.
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { isMainThread, Worker } from 'node:worker_threads';
import type { HashResult, HashTask } from './hash-worker.js';

/** Below this many blocks a worker round trip costs more than it saves. */
export const MIN_WORKER_BLOCKS = 4;
/**
 * A worker is a second V8 heap. The hasher allocates only a hash object and 32 bytes per block, so
 * a small young generation is enough, and saves ~4-5 MiB of the ~21 MiB a worker costs (measured).
 * Beyond the old-generation limit the worker dies and hashing falls back to inline (see `usable`).
 */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 };

interface Waiting { resolve(digests: Buffer): void; reject(error: Error): void }

class HashWorker {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, Waiting>();
  private failure: Error | undefined;

  constructor() {
    this.worker = new Worker(new URL('./hash-worker.js', import.meta.url), { resourceLimits: WORKER_LIMITS });
    this.worker.on('message', (result: HashResult) => {
      const waiting = this.waiting.get(result.id);
      if (!waiting) return;
      this.settle(result.id);
      if (result.digests) waiting.resolve(Buffer.from(result.digests.buffer, result.digests.byteOffset, result.digests.byteLength));
      else waiting.reject(new Error(`block hasher: ${result.error ?? 'no answer'}`));
    });
    const fail = (error: Error) => {
      this.failure = error;
      for (const [id, waiting] of this.waiting) { this.settle(id); waiting.reject(error); }
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`block hasher worker exited (${code})`)));
    // Only keeps the process alive while a task is out (a CLI that is done must be able to exit).
    // Last: attaching the listeners above refs the worker again.
    this.worker.unref();
  }

  get load(): number {
    return this.waiting.size;
  }

  get usable(): boolean {
    return this.failure === undefined;
  }

  hash(task: HashTask): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.waiting.size === 0) this.worker.ref();
      this.waiting.set(task.id, { resolve, reject });
      this.worker.postMessage(task);
    });
  }

  private settle(id: number): void {
    this.waiting.delete(id);
    if (this.waiting.size === 0) this.worker.unref();
  }
}

let nextId = 1;
let pool: HashWorker[] | undefined;

function workers(): HashWorker[] {
  // Leave one core to the event loop; at most 2 hashers (about 1.5 GB/s each with SHA extensions).
  pool ??= Array.from({ length: Math.max(1, Math.min(2, availableParallelism() - 1)) }, () => new HashWorker());
  return pool;
}

/**
 * Starts the hashers now rather than at the first multi-block fetch: a worker's Node start-up
 * costs ~40-60 ms of CPU, which would otherwise land on the guest's first cold reads.
 */
export function startHashWorkers(): void {
  workers();
}

/**
 * SHA-256 of each `blockSize` block of `data` (the last may be short): 32 bytes per block.
 * Blocks flagged 1 in `skip` are not hashed (their 32 bytes are zero).
 */
export async function hashBlocks(data: Buffer, blockSize: number, skip?: Uint8Array): Promise<Buffer> {
  const count = Math.ceil(data.length / blockSize);
  // Off the main thread (the fetch worker) hashing is inline: that thread exists to do it.
  if (count >= MIN_WORKER_BLOCKS && isMainThread && data.buffer instanceof SharedArrayBuffer) {
    const worker = workers().filter((w) => w.usable).sort((a, b) => a.load - b.load)[0];
    if (worker) {
      return worker.hash({ id: nextId++, buffer: data.buffer, byteOffset: data.byteOffset, length: data.length, blockSize, skip });
    }
  }
  const digests = Buffer.alloc(count * 32);
  for (let i = 0; i < count; i++) {
    if (skip?.[i] === 1) continue;
    const at = i * blockSize;
    createHash('sha256').update(data.subarray(at, Math.min(at + blockSize, data.length))).digest().copy(digests, i * 32);
  }
  return digests;
}
