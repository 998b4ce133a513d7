// A fixed-size bitset over 32-bit words with fast "next set / next clear" scans and counts.
// Used for the block map's R and W bits: 1 bit per block, so a 10 GiB image at 64 KiB costs 20 KiB.

const WORD_BITS = 32;
const ALL_ONES = 0xffffffff;

function popcount32(value: number): number {
  let v = value - ((value >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return ((((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24);
}

export class Bitset {
  readonly words: Uint32Array;

  /** `bytes`, when given, is viewed (not copied): its length must be bytesFor(length). */
  constructor(readonly length: number, bytes?: Uint8Array) {
    const wordCount = Math.ceil(length / WORD_BITS);
    if (bytes) {
      if (bytes.byteLength !== wordCount * 4) throw new RangeError(`bitset of ${length} bits needs ${wordCount * 4} bytes, got ${bytes.byteLength}`);
      const aligned = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
      this.words = new Uint32Array(aligned.buffer, aligned.byteOffset, wordCount);
    } else {
      this.words = new Uint32Array(wordCount);
    }
  }

  /** Bytes of storage for a bitset of `length` bits (a whole number of 32-bit words). */
  static bytesFor(length: number): number {
    return Math.ceil(length / WORD_BITS) * 4;
  }

  /** The raw bytes (little-endian words; a view, not a copy). */
  get bytes(): Uint8Array {
    return new Uint8Array(this.words.buffer, this.words.byteOffset, this.words.byteLength);
  }

  get(index: number): boolean {
    return (this.words[index >>> 5]! & (1 << (index & 31))) !== 0;
  }

  set(index: number): void {
    this.words[index >>> 5]! |= 1 << (index & 31);
  }

  clear(index: number): void {
    this.words[index >>> 5]! &= ~(1 << (index & 31));
  }

  setRange(first: number, count: number): void {
    for (let i = first; i < first + count; i++) this.set(i);
  }

  clearRange(first: number, count: number): void {
    for (let i = first; i < first + count; i++) this.clear(i);
  }

  /** First set bit at or after `from`, or -1. Skips whole zero words. */
  nextSet(from: number): number {
    return this.scan(from, 0);
  }

  /** First clear bit at or after `from`, or -1. Skips whole all-ones words. */
  nextClear(from: number): number {
    return this.scan(from, ALL_ONES);
  }

  /** Length of the run of bits equal to bit `from`, starting at `from`, capped at `limit`. */
  runLength(from: number, limit = Infinity): number {
    const value = this.get(from);
    let end = from + 1;
    const stop = Math.min(this.length, from + limit);
    while (end < stop && this.get(end) === value) end++;
    return end - from;
  }

  count(): number {
    let total = 0;
    for (let w = 0; w < this.words.length; w++) total += popcount32(this.words[w]!);
    return total; // bits past `length` are never set
  }

  /** Number of set bits in [first, first+count). */
  countRange(first: number, count: number): number {
    let total = 0;
    for (let i = first; i < first + count; i++) if (this.get(i)) total++;
    return total;
  }

  copy(): Bitset {
    const copy = new Bitset(this.length);
    copy.words.set(this.words);
    return copy;
  }

  /** Sets every bit that is set in `other` (same length). */
  orWith(other: Bitset): void {
    for (let w = 0; w < this.words.length; w++) this.words[w]! |= other.words[w]!;
  }

  /** Clears every bit that is set in `other` (same length). */
  clearWhere(other: Bitset): void {
    for (let w = 0; w < this.words.length; w++) this.words[w]! &= ~other.words[w]!;
  }

  private scan(from: number, skipWord: number): number {
    if (from >= this.length) return -1;
    const wantSet = skipWord === 0;
    let w = from >>> 5;
    // Partial first word: test bit by bit.
    for (let i = from; i < Math.min(this.length, (w + 1) * WORD_BITS); i++) {
      if (this.get(i) === wantSet) return i;
    }
    for (w = w + 1; w < this.words.length; w++) {
      if (this.words[w] === skipWord) continue;
      for (let i = w * WORD_BITS; i < Math.min(this.length, (w + 1) * WORD_BITS); i++) {
        if (this.get(i) === wantSet) return i;
      }
      return -1;
    }
    return -1;
  }
}
