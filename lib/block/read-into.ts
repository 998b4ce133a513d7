// An optional extra a backend may offer: read into a buffer the caller owns, so that a server can
// reuse its buffers instead of allocating (and garbage-collecting) one per request.
import type { BlockBackend } from './backend.js';

export interface ReadsIntoBuffer {
  /** Fills all of `target` with the bytes at [offset, offset + target.length). */
  readInto(offset: number, target: Buffer): Promise<void>;
}

export function readsIntoBuffer(backend: BlockBackend): backend is BlockBackend & ReadsIntoBuffer {
  return typeof (backend as Partial<ReadsIntoBuffer>).readInto === 'function';
}

/** read() for a backend whose real work is readInto: one fresh buffer, filled in place. */
export async function readByFilling(reader: ReadsIntoBuffer, offset: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  await reader.readInto(offset, buffer);
  return buffer;
}

/**
 * Another optional extra: ranges of a read that are known to be zeros without reading them (the
 * repository knows its zero blocks; the COR device its absent zero blocks). A server answers them
 * as holes, and reads only the rest. Asking counts as reading those bytes: a COR device marks such
 * blocks present.
 */
export interface KnowsZeroRanges {
  /** Byte ranges [from, to) inside [offset, offset + length), in order, not overlapping. */
  knownZeroRanges(offset: number, length: number): Array<readonly [number, number]>;
}

export function knowsZeroRanges(backend: BlockBackend): backend is BlockBackend & KnowsZeroRanges {
  return typeof (backend as Partial<KnowsZeroRanges>).knownZeroRanges === 'function';
}

/**
 * The byte ranges of [offset, offset + length) covered by blocks for which `isZero(block)` holds,
 * neighbours merged, clipped to the request and to `size` (for knownZeroRanges).
 */
export function zeroBlockRanges(offset: number, length: number, blockSize: number, size: number, isZero: (block: number) => boolean): Array<readonly [number, number]> {
  const end = Math.min(offset + length, size);
  const ranges: Array<[number, number]> = [];
  for (let block = Math.floor(offset / blockSize); block * blockSize < end; block++) {
    if (!isZero(block)) continue;
    const from = Math.max(offset, block * blockSize);
    const to = Math.min(end, (block + 1) * blockSize);
    const previous = ranges[ranges.length - 1];
    if (previous && previous[1] === from) previous[1] = to;
    else ranges.push([from, to]);
  }
  return ranges;
}

/** Bytes a backend lends instead of copying them into the caller's buffer; release() once sent. */
export interface LentBytes {
  readonly data: Buffer;
  release(): void;
}

/**
 * Optional too: like readInto, but a backend that already holds the bytes in memory (a COR device
 * serving what it just fetched) may lend them instead of copying; then `target` is left alone.
 */
export interface LendsReads {
  readIntoOrLend(offset: number, target: Buffer): Promise<LentBytes | undefined>;
}

export function lendsReads(backend: BlockBackend): backend is BlockBackend & LendsReads {
  return typeof (backend as Partial<LendsReads>).readIntoOrLend === 'function';
}
