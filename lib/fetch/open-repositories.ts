// Opens the repositories named by URIs, gets the image's manifest from the first that has it,
// and builds the verified, failing-over block reader over all of them.
import { createHash } from 'node:crypto';
import { Repository } from '../repo/repository.js';
import { decodeManifest } from '../repo/manifest-codec.js';
import { UnknownImage } from '../repo/errors.js';
import type { Manifest } from '../repo/manifest-format.js';
import { isNbdUri } from '../nbd/client.js';
import { DirectorySource } from './directory-source.js';
import { NbdSource } from './nbd-source.js';
import type { ImageReader, ManifestStore, RepositorySource } from './source.js';
import { VerifyBackend } from './verify.js';
import { FailoverBackend, type FetchErrorEvent } from './failover.js';
import { RepositoryUnreachable, type RepositoryFailure } from './errors.js';
import { FetchWorker, WorkerBackedReader, workerReadThreshold } from './worker-fetcher.js';
import type { FetchWorkerMember } from './fetch-worker.js';
import { startHashWorkers } from './block-hasher.js';

export interface OpenRepositoriesOptions {
  readonly timeoutMs?: number;
  readonly onFetchError?: (event: FetchErrorEvent) => void;
  /** Lines worth a log entry that are not fetch errors (the fetch worker stopping). */
  readonly log?: (line: string) => void;
  /** Manifests of remote repositories kept by digest (the host-wide block cache): fetched once per host. */
  readonly manifestStore?: ManifestStore;
  /** The endpoint of s3:// repositories (--s3-endpoint), over AWS_ENDPOINT_URL and the shared config. */
  readonly s3Endpoint?: string;
}

export interface OpenedRepositories {
  readonly manifest: Manifest;
  /** SHA-256 (hex) of the encoded manifest: names the exact image in the block map. */
  readonly manifestDigest: string;
  readonly sources: RepositorySource[];
  /** Verified reads of whole blocks, striped and failing over across `sources`. */
  readonly upstream: FailoverBackend;
  /** The worker thread that fetches and verifies reads of several blocks. */
  readonly fetchWorker: FetchWorker | undefined;
  /**
   * Starts the threads a cold read needs (the fetch worker; the hashers for a source the worker
   * cannot open) now, so their start-up does not land on the guest's first reads.
   */
  prestart(): void;
  close(): Promise<void>;
}

/** An empty list means the default local repository directory. */
export function repositoryUris(from: readonly string[]): string[] {
  return from.length > 0 ? [...from] : [Repository.defaultDir()];
}

async function openSource(uri: string, options: OpenRepositoriesOptions): Promise<RepositorySource> {
  if (isNbdUri(uri)) return new NbdSource(uri);
  return DirectorySource.open(uri.startsWith('file://') ? new URL(uri).pathname : uri, { s3Endpoint: options.s3Endpoint });
}

export async function openRepositories(from: readonly string[], ref: string, options: OpenRepositoriesOptions = {}): Promise<OpenedRepositories> {
  const uris = repositoryUris(from);
  const sources: RepositorySource[] = [];
  const failures: RepositoryFailure[] = [];
  let unknown: UnknownImage | undefined;
  let bytes: Buffer | undefined;
  for (const uri of uris) {
    let source: RepositorySource;
    try {
      source = await openSource(uri, options);
    } catch (error) {
      failures.push({ uri, error: asError(error) });
      continue;
    }
    sources.push(source);
    if (bytes) continue;
    try {
      bytes = await source.manifestBytes(ref, options.manifestStore);
    } catch (error) {
      if (error instanceof UnknownImage) unknown ??= error;
      failures.push({ uri, error: asError(error) });
    }
  }
  if (!bytes) {
    await Promise.allSettled(sources.map((s) => s.close()));
    if (unknown) throw unknown;
    throw new RepositoryUnreachable(failures);
  }
  const manifest = decodeManifest(bytes);
  const manifestDigest = createHash('sha256').update(bytes).digest('hex');
  // Reads of several blocks are fetched and verified in one worker thread (see worker-fetcher.ts).
  const workerMembers: FetchWorkerMember[] = [];
  /** Each source's member index in the worker (sources of another kind have none). */
  const workerIndex = new Map<RepositorySource, number>();
  for (const source of sources) {
    const kind = source instanceof NbdSource ? 'nbd' : source instanceof DirectorySource ? 'directory' : undefined;
    if (!kind) continue;
    workerIndex.set(source, workerMembers.length);
    workerMembers.push({ kind, uri: source.uri, ...(options.s3Endpoint !== undefined ? { s3Endpoint: options.s3Endpoint } : {}) });
  }
  const fetcher = workerMembers.length > 0 ? new FetchWorker({ manifest: bytes, members: workerMembers }, options.log) : undefined;
  const readers: ImageReader[] = [];
  const members = sources.map((source) => {
    const reader = source.imageReader(manifest);
    readers.push(reader);
    const reset = reader.reset?.bind(reader);
    const verified = new VerifyBackend(source.uri, manifest, reader);
    const index = workerIndex.get(source);
    if (!fetcher || index === undefined) return { uri: source.uri, backend: verified, reset };
    const backend = new WorkerBackedReader(fetcher, index, verified, workerReadThreshold(manifest.blockSize), reset);
    return { uri: source.uri, backend, reset: (reason: string) => backend.reset(reason) };
  });
  const upstream = new FailoverBackend(members, { blockSize: manifest.blockSize, timeoutMs: options.timeoutMs, onFetchError: options.onFetchError });
  return {
    manifest, manifestDigest, sources, upstream, fetchWorker: fetcher,
    prestart() {
      // The connections too: a far repository's handshake would otherwise land on the first read.
      for (const reader of readers) reader.warm?.();
      fetcher?.start();
      if (workerMembers.length < sources.length) startHashWorkers();
    },
    async close() {
      await upstream.close();
      await fetcher?.close();
      await Promise.allSettled(sources.map((s) => s.close()));
    },
  };
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
