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
import type { RepositorySource } from './source.js';
import { VerifyBackend } from './verify.js';
import { FailoverBackend, type FetchErrorEvent } from './failover.js';
import { RepositoryUnreachable } from './errors.js';

export interface OpenRepositoriesOptions {
  readonly timeoutMs?: number;
  readonly onFetchError?: (event: FetchErrorEvent) => void;
}

export interface OpenedRepositories {
  readonly manifest: Manifest;
  /** SHA-256 (hex) of the encoded manifest: names the exact image in the block map. */
  readonly manifestDigest: string;
  readonly sources: RepositorySource[];
  /** Verified reads of whole blocks, striped and failing over across `sources`. */
  readonly upstream: FailoverBackend;
  close(): Promise<void>;
}

/** An empty list means the default local repository directory. */
export function repositoryUris(from: readonly string[]): string[] {
  return from.length > 0 ? [...from] : [Repository.defaultDir()];
}

async function openSource(uri: string): Promise<RepositorySource> {
  if (isNbdUri(uri)) return new NbdSource(uri);
  return DirectorySource.open(uri.startsWith('file://') ? new URL(uri).pathname : uri);
}

export async function openRepositories(from: readonly string[], ref: string, options: OpenRepositoriesOptions = {}): Promise<OpenedRepositories> {
  const uris = repositoryUris(from);
  const sources: RepositorySource[] = [];
  const failures: string[] = [];
  let unknown: UnknownImage | undefined;
  let bytes: Buffer | undefined;
  for (const uri of uris) {
    let source: RepositorySource;
    try {
      source = await openSource(uri);
    } catch (error) {
      failures.push(error instanceof Error ? error.message : String(error));
      continue;
    }
    sources.push(source);
    if (bytes) continue;
    try {
      bytes = await source.manifestBytes(ref);
    } catch (error) {
      if (error instanceof UnknownImage) unknown ??= error;
      failures.push(error instanceof Error ? error.message : String(error));
    }
  }
  if (!bytes) {
    await Promise.allSettled(sources.map((s) => s.close()));
    if (unknown) throw unknown;
    throw new RepositoryUnreachable(uris, failures);
  }
  const manifest = decodeManifest(bytes);
  const manifestDigest = createHash('sha256').update(bytes).digest('hex');
  const members = sources.map((source) => {
    const reader = source.imageReader(manifest);
    const reset = (reader as { reset?: (reason: string) => void }).reset?.bind(reader);
    return { uri: source.uri, backend: new VerifyBackend(source.uri, manifest, reader), reset };
  });
  const upstream = new FailoverBackend(members, { blockSize: manifest.blockSize, timeoutMs: options.timeoutMs, onFetchError: options.onFetchError });
  return {
    manifest, manifestDigest, sources, upstream,
    async close() {
      await upstream.close();
      await Promise.allSettled(sources.map((s) => s.close()));
    },
  };
}
