// A repository location as the user writes it: `s3://BUCKET/PREFIX` for an S3 bucket (endpoint and
// credentials the way S3 tools take them, see s3-storage.ts), anything else a local directory.
import { resolve as resolvePath } from 'node:path';
import { DirectoryStorage } from './directory-storage.js';
import { isS3Uri, S3Storage } from './s3-storage.js';
import type { RepositoryStorage } from './storage.js';

export interface StorageOptions {
  /** The S3 endpoint (`--s3-endpoint`), over AWS_ENDPOINT_URL and the shared config. */
  readonly s3Endpoint?: string;
}

export { isS3Uri };

export function openStorage(location: string, options: StorageOptions = {}): RepositoryStorage {
  if (isS3Uri(location)) return new S3Storage(location, options.s3Endpoint);
  return new DirectoryStorage(resolvePath(location));
}
