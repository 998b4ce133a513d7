// Worker thread that reads large runs of blocks from NBD repositories and verifies them, so the
// socket reads and the SHA-256 of a cold read run beside the event loop that serves the guest
// (which was the busiest thread of a cold read). Main side: worker-fetcher.ts.
// Each member is one repository; failover, timeouts and logging stay on the main thread.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { decodeManifest } from '../repo/manifest-codec.js';
import { NbdSource } from './nbd-source.js';
import { VerifyBackend } from './verify.js';
import { acquireShared, releaseShared } from './shared-buffers.js';
import { BlockError } from '../block/backend.js';
import { DigestMismatch } from './errors.js';

export interface FetchWorkerInit {
  /** The encoded manifest (the worker verifies against the same digests as the main thread). */
  readonly manifest: Uint8Array;
  readonly uris: readonly string[];
}

export type ToFetchWorker =
  | { readonly type: 'read'; readonly id: number; readonly member: number; readonly offset: number; readonly length: number }
  | { readonly type: 'reset'; readonly member: number; readonly reason: string }
  /** The main thread no longer uses the buffer of read `id`: it may be reused. */
  | { readonly type: 'free'; readonly id: number }
  | { readonly type: 'close' };

/** A read's error, rebuilt on the main thread as the same class (see worker-fetcher.ts). */
export interface FetchWorkerError {
  readonly name: string;
  readonly code: string;
  readonly message: string;
  readonly source?: string;
  readonly block?: number;
}

export type FromFetchWorker =
  | { readonly type: 'data'; readonly id: number; readonly buffer: SharedArrayBuffer; readonly byteOffset: number; readonly length: number }
  | { readonly type: 'error'; readonly id: number; readonly error: FetchWorkerError };

function describe(error: unknown): FetchWorkerError {
  if (error instanceof DigestMismatch) return { name: error.name, code: error.code, message: error.message, source: error.source, block: error.block };
  if (error instanceof BlockError) return { name: error.name, code: error.code, message: error.message };
  return { name: 'Error', code: 'EIO', message: error instanceof Error ? error.message : String(error) };
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  const init = workerData as FetchWorkerInit;
  const manifest = decodeManifest(Buffer.from(init.manifest.buffer, init.manifest.byteOffset, init.manifest.byteLength));
  const members = init.uris.map((uri) => {
    const source = new NbdSource(uri);
    const reader = source.imageReader(manifest) as ReturnType<NbdSource['imageReader']> & { reset(reason: string): void };
    return { source, reader, verified: new VerifyBackend(uri, manifest, reader) };
  });
  /** Buffers lent to the main thread, by read id: the worker's hold until 'free'. */
  const lent = new Map<number, Buffer>();

  port.on('message', (message: ToFetchWorker) => {
    switch (message.type) {
      case 'read':
        members[message.member]!.verified.read(message.offset, message.length).then((data) => {
          const shared = data.buffer instanceof SharedArrayBuffer ? data : copyToShared(data);
          lent.set(message.id, shared);
          port.postMessage({ type: 'data', id: message.id, buffer: shared.buffer as SharedArrayBuffer, byteOffset: shared.byteOffset, length: shared.length } satisfies FromFetchWorker);
        }, (error: unknown) => {
          port.postMessage({ type: 'error', id: message.id, error: describe(error) } satisfies FromFetchWorker);
        });
        break;
      case 'reset':
        members[message.member]?.reader.reset(message.reason);
        break;
      case 'free': {
        const data = lent.get(message.id);
        lent.delete(message.id);
        if (data) releaseShared(data);
        break;
      }
      case 'close':
        // Polite NBD disconnects, then nothing keeps the thread alive and it exits.
        void Promise.allSettled(members.map(async (m) => { await m.verified.close(); await m.source.close(); })).then(() => port.close());
        break;
    }
  });
}

function copyToShared(data: Buffer): Buffer {
  const shared = acquireShared(data.length);
  data.copy(shared);
  return shared;
}
