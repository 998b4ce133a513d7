// One repository as the fetcher sees it: manifest bytes by reference, and a reader of an image.
import type { BlockBackend } from '../block/backend.js';
import type { Manifest } from '../repo/manifest-format.js';

export interface RepositorySource {
  /** What the user gave (directory path or NBD URI): used in every log line and error. */
  readonly uri: string;
  /** The encoded manifest of `ref` ('name' or 'name@N'); throws UnknownImage if absent. */
  manifestBytes(ref: string): Promise<Buffer>;
  /** A read-only backend over the image's bytes (unverified: wrap it in VerifyBackend). */
  imageReader(manifest: Manifest): BlockBackend;
  close(): Promise<void>;
}
