// A repository location as the user writes it: `s3://BUCKET/PREFIX` for an S3 bucket (endpoint and
// credentials the way S3 tools take them, see s3-storage.ts), anything else a local directory.
// The S3 client is loaded only for an s3:// location: it doubles a command's start-up CPU.
import { resolve as resolvePath } from 'node:path';
import { DirectoryStorage } from './directory-storage.js';
import type { RepositoryStorage } from './storage.js';

export interface StorageOptions {
  /** The S3 endpoint (`--s3-endpoint`), over AWS_ENDPOINT_URL and the shared config. */
  readonly s3Endpoint?: string;
}

export function isS3Uri(location: string): boolean {
  return location.startsWith('s3://');
}

export async function openStorage(location: string, options: StorageOptions = {}): Promise<RepositoryStorage> {
  if (!isS3Uri(location)) return new DirectoryStorage(resolvePath(location));
  const { S3Storage } = await import('./s3-storage.js');
  return new S3Storage(location, options.s3Endpoint);
}
