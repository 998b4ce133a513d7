// Typed errors of the block map (`<disk>.map`), each one line with what to do.
import { LazybootError } from '../base/errors.js';

/** The map on disk was made for another image or block size than the one asked for. */
export class MapMismatch extends LazybootError {
  constructor(mapPath: string, what: string, expected: string, found: string) {
    super(`${mapPath} belongs to ${what} ${found}, not ${expected}`,
      'use another --disk, or delete the disk and its .map to start over');
  }
}

/** Neither copy of the map is readable (both checksums fail): not a torn write, real damage. */
export class MapCorrupt extends LazybootError {
  constructor(mapPath: string, detail: string) {
    super(`${mapPath} is corrupt (${detail})`,
      'delete the disk and its .map to start over (blocks are fetched again)');
  }
}

/** A map has room for MAX_TARGETS replication targets, each with its own W bits. */
export class MapTargetsFull extends LazybootError {
  constructor(path: string, targets: readonly string[]) {
    super(`${path} already ships to ${targets.length} targets (${targets.join(', ')})`, 'snapshot to one of those repositories');
  }
}
