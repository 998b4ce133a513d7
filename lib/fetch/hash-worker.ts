// Worker thread of the block hasher: SHA-256 of each block of a shared buffer, so the fetcher's
// verification runs beside the event loop instead of on it. Receives HashTask, answers HashResult.
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

export interface HashTask {
  readonly id: number;
  readonly buffer: SharedArrayBuffer;
  readonly byteOffset: number;
  readonly length: number;
  readonly blockSize: number;
  /** Blocks flagged 1 are not hashed (zero blocks: checked as all-zero by the caller); digest left 0. */
  readonly skip?: Uint8Array;
}

export interface HashResult {
  readonly id: number;
  /** 32 bytes per block, in order (the last block may be short). */
  readonly digests?: Uint8Array;
  readonly error?: string;
}

parentPort?.on('message', (task: HashTask) => {
  try {
    const data = Buffer.from(task.buffer, task.byteOffset, task.length);
    const count = Math.ceil(task.length / task.blockSize);
    const digests = new Uint8Array(count * 32);
    for (let i = 0; i < count; i++) {
      if (task.skip?.[i] === 1) continue;
      const at = i * task.blockSize;
      digests.set(createHash('sha256').update(data.subarray(at, Math.min(at + task.blockSize, task.length))).digest(), i * 32);
    }
    parentPort!.postMessage({ id: task.id, digests } satisfies HashResult, [digests.buffer]);
  } catch (error) {
    parentPort!.postMessage({ id: task.id, error: (error as Error).message } satisfies HashResult);
  }
});
