// Worker thread that reads large runs of blocks from the repositories (NBD servers or directories)
// and verifies them, so the socket or file reads and the SHA-256 of a cold read run beside the
// event loop that serves the guest (which was the busiest thread of a cold read). Main side:
// worker-fetcher.ts.
// Each member is one repository; failover, timeouts and logging stay on the main thread.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { decodeManifest } from '../repo/manifest-codec.js';
import { NbdSource } from './nbd-source.js';
import { DirectorySource } from './directory-source.js';
import type { ImageReader, RepositorySource } from './source.js';
import { VerifyBackend } from './verify.js';
import { acquireShared, releaseShared } from './shared-buffers.js';
import { BlockError } from '../block/backend.js';
import { DigestMismatch } from './errors.js';

/** A repository as the worker opens it: an NBD URI, or one opened in-process (a directory path or s3:// URI). */
export interface FetchWorkerMember {
  readonly kind: 'nbd' | 'directory';
  readonly uri: string;
  /** The endpoint of an s3:// repository (--s3-endpoint), when not from the environment. */
  readonly s3Endpoint?: string;
}

export interface FetchWorkerInit {
  /**
   * The encoded manifest (the worker verifies against the same digests as the main thread). Not
   * copied until the worker starts: for a 10 GiB image it is 5 MiB that a device which never
   * starts the worker should not hold twice.
   */
  readonly manifest: Uint8Array;
  readonly members: readonly FetchWorkerMember[];
}

interface OpenedMember {
  readonly source: RepositorySource;
  readonly reader: ImageReader;
  readonly verified: VerifyBackend;
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
  const members = init.members.map(async (member): Promise<OpenedMember> => {
    const source: RepositorySource = member.kind === 'nbd' ? new NbdSource(member.uri) : await DirectorySource.open(member.uri, { s3Endpoint: member.s3Endpoint });
    const reader = source.imageReader(manifest);
    // Started for a cold read (prestart or its first large read): connect now, not on that read.
    reader.warm?.();
    return { source, reader, verified: new VerifyBackend(member.uri, manifest, reader) };
  });
  // A member that cannot be opened fails each read (reported against it), not the worker.
  for (const member of members) member.catch(() => undefined);
  /** Buffers lent to the main thread, by read id: the worker's hold until 'free'. */
  const lent = new Map<number, Buffer>();

  port.on('message', (message: ToFetchWorker) => {
    switch (message.type) {
      case 'read':
        members[message.member]!.then((member) => member.verified.read(message.offset, message.length)).then((data) => {
          const shared = data.buffer instanceof SharedArrayBuffer ? data : copyToShared(data);
          lent.set(message.id, shared);
          port.postMessage({ type: 'data', id: message.id, buffer: shared.buffer as SharedArrayBuffer, byteOffset: shared.byteOffset, length: shared.length } satisfies FromFetchWorker);
        }, (error: unknown) => {
          port.postMessage({ type: 'error', id: message.id, error: describe(error) } satisfies FromFetchWorker);
        });
        break;
      case 'reset':
        void members[message.member]?.then((member) => member.reader.reset?.(message.reason), () => undefined);
        break;
      case 'free': {
        const data = lent.get(message.id);
        lent.delete(message.id);
        if (data) releaseShared(data);
        break;
      }
      case 'close':
        // Polite NBD disconnects, then nothing keeps the thread alive and it exits.
        void Promise.allSettled(members.map(async (opening) => {
          const member = await opening;
          await member.verified.close();
          await member.source.close();
        })).then(() => port.close());
        break;
    }
  });
}

function copyToShared(data: Buffer): Buffer {
  const shared = acquireShared(data.length);
  data.copy(shared);
  return shared;
}
