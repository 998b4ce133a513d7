// `--to URI` → a WriteTarget: a repository directory (written in-process) or a `repo serve` write
// endpoint (`http+unix:///?socket=PATH`, `http://HOST:PORT`).
import { resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../base/errors.js';
import { Repository } from '../repo/repository.js';
import { RepositoryWriter } from '../repo/repository-writer.js';
import type { WriteTarget } from '../repo/write-target.js';
import { HttpWriteTarget } from './http-client.js';

/** The URI in one canonical spelling: how a map remembers which target it shipped to. */
export function canonicalWriteUri(uri: string): string {
  if (uri.startsWith('http+unix:')) return `http+unix:///?socket=${resolvePath(socketOf(uri))}`;
  if (uri.startsWith('http://')) {
    const url = new URL(uri);
    return `http://${url.host}`;
  }
  if (uri.startsWith('file:')) return resolvePath(fileURLToPath(uri));
  if (uri.startsWith('s3://')) return uri.replace(/\/+$/, ''); // a repository in an S3 bucket, written in-process
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) throw unsupported(uri);
  return resolvePath(uri);
}

function socketOf(uri: string): string {
  const socket = new URL(uri).searchParams.get('socket');
  if (!socket) throw new UsageError(`${uri} names no socket`, 'use http+unix:///?socket=PATH');
  return socket;
}

function unsupported(uri: string): UsageError {
  return new UsageError(`cannot write to ${JSON.stringify(uri)}`, 'use a repository directory, http+unix:///?socket=PATH or http://HOST:PORT (`lazyboot repo serve --write-socket PATH` prints it), or s3://BUCKET/PREFIX');
}

export interface WriteTargetOptions {
  /** The endpoint of an s3:// repository (--s3-endpoint), over AWS_ENDPOINT_URL and the shared config. */
  readonly s3Endpoint?: string;
}

export async function openWriteTarget(uri: string, options: WriteTargetOptions = {}): Promise<WriteTarget> {
  const canonical = canonicalWriteUri(uri);
  if (canonical.startsWith('http+unix:')) return new HttpWriteTarget(uri, { socketPath: socketOf(canonical) });
  if (canonical.startsWith('http://')) {
    const url = new URL(canonical);
    return new HttpWriteTarget(uri, { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) });
  }
  return new RepositoryWriter(await Repository.open(canonical, { create: false, s3Endpoint: options.s3Endpoint }), uri, true);
}
