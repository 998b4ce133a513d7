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
  /**
   * The write session that committed this version (lib/repo/repository-writer.ts): a retried
   * commit of the same session and content finds it instead of adding a second version.
   */
  readonly session?: string;
}

/** The digest of block `index` (a view, not a copy). */
export function digestOf(manifest: Manifest, index: number): Buffer {
  return manifest.digests.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
}

export function isZeroDigest(digest: Buffer): boolean {
  return digest.equals(ZERO_DIGEST);
}

/** Whether the digest at byte `at` of a digest list is the zero digest (no Buffer made). */
export function isZeroDigestAt(digests: Buffer, at: number): boolean {
  for (let i = at; i < at + DIGEST_BYTES; i++) if (digests[i] !== 0) return false;
  return true;
}

/** One byte per block, 1 where the block is all zeros: computed once per opened image. */
export function zeroBlockFlags(manifest: Manifest): Uint8Array {
  const flags = new Uint8Array(manifest.blockCount);
  for (let i = 0; i < manifest.blockCount; i++) flags[i] = isZeroDigestAt(manifest.digests, i * DIGEST_BYTES) ? 1 : 0;
  return flags;
}
