// One repository as the fetcher sees it: manifest bytes by reference, and a reader of an image.
import type { BlockBackend } from '../block/backend.js';
import type { Manifest } from '../repo/manifest-format.js';

/**
 * Where manifests fetched from a remote repository are kept by their SHA-256 (the host-wide block
 * cache): `get` verifies what it returns, `put` stores bytes the caller verified.
 */
export interface ManifestStore {
  get(digest: string, length: number): Promise<Buffer | undefined>;
  put(digest: string, bytes: Buffer): Promise<void>;
}

/** An image's bytes in a repository. */
export interface ImageReader extends BlockBackend {
  /**
   * Opens its connection now, when it has one, so that the first read does not pay for the
   * handshake (several round trips on a far link). Failures are left to the first read.
   */
  warm?(): void;
  /** Drops its connection (after a timeout): the next read reconnects. */
  reset?(reason: string): void;
}

export interface RepositorySource {
  /** What the user gave (directory path or NBD URI): used in every log line and error. */
  readonly uri: string;
  /**
   * The encoded manifest of `ref` ('name' or 'name@N'); throws UnknownImage if absent. A remote
   * source takes it from `store` when it is there, and keeps it there once fetched.
   */
  manifestBytes(ref: string, store?: ManifestStore): Promise<Buffer>;
  /** A read-only backend over the image's bytes (unverified: wrap it in VerifyBackend). */
  imageReader(manifest: Manifest): ImageReader;
  close(): Promise<void>;
}
