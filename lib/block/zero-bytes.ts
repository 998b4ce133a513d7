// Whether a range of bytes is all zeros: the one zero check of the block path (verifying fetched
// zero blocks, storing fetched runs, hashing blocks for a snapshot or a replica).

/** Compared against in 64 KiB slices: much faster than a byte loop. */
const ZERO_PAGE = Buffer.alloc(65536);

export function isAllZero(data: Buffer, from = 0, to = data.length): boolean {
  for (let at = from; at < to; at += ZERO_PAGE.length) {
    const stop = Math.min(to, at + ZERO_PAGE.length);
    if (ZERO_PAGE.compare(data, at, stop, 0, stop - at) !== 0) return false;
  }
  return true;
}
