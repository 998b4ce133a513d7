// Block sizes: per image, a power of two from 4 KiB to 4 MiB; parsed from "64K"-style text.
import { InvalidBlockSize } from './errors.js';

export const MIN_BLOCK_SIZE = 4 * 1024;
export const MAX_BLOCK_SIZE = 4 * 1024 * 1024;
export const DEFAULT_BLOCK_SIZE = 64 * 1024;

export function isValidBlockSize(size: number): boolean {
  return Number.isInteger(size) && size >= MIN_BLOCK_SIZE && size <= MAX_BLOCK_SIZE && (size & (size - 1)) === 0;
}

/** Accepts a number of bytes or text like "65536", "64K", "64KiB", "1M". */
export function parseBlockSize(value: string | number): number {
  let bytes: number;
  if (typeof value === 'number') {
    bytes = value;
  } else {
    const match = /^\s*([0-9]+)\s*([kKmM]?)(?:i?[bB])?\s*$/.exec(value);
    if (!match) throw new InvalidBlockSize(value);
    const unit = match[2]!.toUpperCase();
    bytes = Number(match[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 * 1024 : 1);
  }
  if (!isValidBlockSize(bytes)) throw new InvalidBlockSize(value);
  return bytes;
}
