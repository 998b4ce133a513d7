// The in-memory shape of an image manifest, shared by the repository (which writes them) and by
// every reader (fetcher, COR device). The repository owns the on-disk encoding.

/** Bytes in one SHA-256 digest. */
export const DIGEST_BYTES = 32;

/**
 * A digest of 32 zero bytes marks an all-zero block: such blocks are never stored and readers
 * synthesise zeros. (No real SHA-256 is all zeros.)
 */
export const ZERO_DIGEST = Buffer.alloc(DIGEST_BYTES);

export interface Manifest {
  readonly name: string;
  readonly version: number;
  /** Disk size in bytes (need not be a multiple of blockSize: the last block is short). */
  readonly size: number;
  readonly blockSize: number;
  /** Number of blocks: ceil(size / blockSize). */
  readonly blockCount: number;
  /** blockCount SHA-256 digests back to back (32 bytes each): kilobytes, not objects, per image. */
  readonly digests: Buffer;
  /** `name@N` this version was derived from, if any. */
  readonly parent?: string;
  /** ISO 8601 time of commit. */
  readonly created: string;
}

/** The digest of block `index` (a view, not a copy). */
export function digestOf(manifest: Manifest, index: number): Buffer {
  return manifest.digests.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
}

export function isZeroDigest(digest: Buffer): boolean {
  return digest.equals(ZERO_DIGEST);
}
