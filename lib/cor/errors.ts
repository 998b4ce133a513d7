// Typed errors of the copy-on-read device.
import { LazybootError } from '../errors.js';

/** The local disk exists but has another size than the image. */
export class DiskSizeMismatch extends LazybootError {
  constructor(disk: string, actual: number, expected: number) {
    super(`${disk} is ${actual} bytes but the image is ${expected} bytes`, 'use another --disk, or delete this one to start over');
  }
}

/** A disk without its map, or a map for another manifest of the same name@N. */
export class DiskStateUnknown extends LazybootError {}
