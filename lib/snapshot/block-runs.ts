// Reading and hashing the marked blocks of one batch, for the snapshot and the replicator alike:
// runs of consecutive blocks are read from the local disk in one call, zero blocks are told apart
// (they are never stored), every other block is hashed (SHA-256) and offered once per digest.
import { createHash } from 'node:crypto';
import { isAllZero } from '../block/zero-bytes.js';
import type { LocalDisk } from '../cor/local-disk.js';
import type { OfferedBlock } from '../repo/write-target.js';

/** Runs of consecutive indexes in a sorted list, as [first, count]. */
export function* consecutiveRuns(indexes: readonly number[]): Generator<[number, number]> {
  let first = -1;
  let count = 0;
  for (const index of indexes) {
    if (count > 0 && index === first + count) {
      count++;
      continue;
    }
    if (count > 0) yield [first, count];
    first = index;
    count = 1;
  }
  if (count > 0) yield [first, count];
}

/** Where the blocks are read from: the local disk, or a running disk as of a snapshot's instant. */
export type BlockSource = Pick<LocalDisk, 'read'>;

export interface HashVisitor {
  /** A block of zeros: nothing to offer. */
  onZero(index: number): void;
  /** A data block's digest; false leaves the block out (its caller knows it is stored already). */
  onDigest(index: number, digest: Buffer): boolean;
}

export interface HashedBatch {
  /** The first block of each digest not in `seen` before: the digests to offer. */
  readonly offered: Array<OfferedBlock & { index: number }>;
  /** Blocks whose digest was offered already (in this batch or in `seen`): stored with that one. */
  readonly repeats: Array<{ index: number; digest: Buffer }>;
}

/**
 * Reads the blocks `indexes` (sorted, all present on `local`) of a disk of `size` bytes, hashes
 * them and sorts them into offered and repeats; `seen` (digests in latin1) is updated, so a
 * caller that keeps it across batches offers each digest once per pass.
 */
export async function readAndHashBlocks(local: BlockSource, indexes: readonly number[], geometry: { readonly size: number; readonly blockSize: number },
  seen: Set<string>, visitor: HashVisitor): Promise<HashedBatch> {
  const { size, blockSize } = geometry;
  const offered: Array<OfferedBlock & { index: number }> = [];
  const repeats: Array<{ index: number; digest: Buffer }> = [];
  for (const [first, count] of consecutiveRuns(indexes)) {
    const start = first * blockSize;
    const data = await local.read(start, Math.min(count * blockSize, size - start));
    for (let i = 0; i < count; i++) {
      const index = first + i;
      const block = data.subarray(i * blockSize, Math.min((i + 1) * blockSize, data.length));
      if (isAllZero(block)) {
        visitor.onZero(index);
        continue;
      }
      const digest = createHash('sha256').update(block).digest();
      if (!visitor.onDigest(index, digest)) continue;
      const key = digest.toString('latin1');
      if (seen.has(key)) {
        repeats.push({ index, digest });
        continue;
      }
      seen.add(key);
      offered.push({ index, digest, data: block });
    }
  }
  return { offered, repeats };
}
