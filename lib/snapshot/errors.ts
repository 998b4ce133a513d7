// Typed errors of `snapshot()`: each says in one line what is wrong and what to do.
import { LazybootError } from '../base/errors.js';

/** The disk has no map: it was never served by lazyboot, so nothing says what changed. */
export class SnapshotNoMap extends LazybootError {
  constructor(disk: string, mapPath: string) {
    super(`${disk} has no map (${mapPath})`, 'snapshot a disk made by `lazyboot disk serve` or `lazyboot boot --disk`');
  }
}

/** The target has no version this disk derives from, and the disk does not hold every block. */
export class SnapshotNeedsFullDisk extends LazybootError {
  constructor(uri: string, image: string, absent: number) {
    super(`${uri} does not hold ${image} (the image this disk came from) and ${absent} of its blocks are not local`, `fill the disk first (\`lazyboot disk fill --disk FILE\`), or import ${image} there`);
  }
}

/** The version the target last received from this disk is gone or different there. */
export class SnapshotBaselineChanged extends LazybootError {
  constructor(uri: string, ref: string, problem: string) {
    super(`${uri}'s ${ref}, the version this disk last shipped there, ${problem}`, 'snapshot with --full: every local block is hashed and only what the repository lacks is sent');
  }
}

/** Stopped by its signal (Ctrl-C, or an AbortSignal); every mark was put back. */
export class SnapshotInterrupted extends LazybootError {
  constructor(disk: string) {
    super(`snapshot of ${disk} interrupted; its blocks stay marked for the next snapshot`, 'run it again: blocks the repository received are not sent twice');
  }
}

/** replicate() was given no map to start from. */
export class ReplicateNoMap extends LazybootError {
  constructor(disk: string, mapPath: string) {
    super(`${disk} has no map (${mapPath})`, 'replicate a disk made by `lazyboot disk serve` or `lazyboot boot --disk`, or give `boot --replicate-to`');
  }
}

/** A replication option out of range (no target, the same target twice, an interval or rate that cannot be). */
export class ReplicateOptionInvalid extends LazybootError {}
