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

/** The in-flight file is damaged: its blocks cannot be told, so nothing may be assumed shipped. */
export class SendingSetCorrupt extends LazybootError {
  constructor(path: string, problem: string) {
    super(`${path} (blocks of an interrupted snapshot) ${problem}`, 'its marks cannot be recovered from it: snapshot with --full (every local block is hashed and only what the repository lacks is sent; the file is replaced)');
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

/**
 * The COR device's live snapshot (live-snapshot.ts) of a disk QEMU writes itself (after a pivot):
 * not through that path. A VM's snapshot after the pivot takes native-snapshot.ts instead.
 */
export class LiveSnapshotAfterPivot extends LazybootError {
  constructor(disk: string, during: boolean) {
    super(
      during ? `the VM pivoted to QEMU's native graph while its disk ${disk} was being snapshotted; its blocks stay marked` : `the VM runs on QEMU's native graph (pivoted): the copy-on-read device no longer sees the writes to ${disk}`,
      during ? 'snapshot again: after the pivot it is taken through QEMU' : 'snapshot the VM (`lazyboot snapshot NAME`, LazyVm.snapshot): after the pivot it is taken through QEMU',
    );
  }
}

/** The VM is being moved to QEMU's native graph right now (a pause of milliseconds). */
export class LiveSnapshotDuringPivot extends LazybootError {
  constructor(disk: string) {
    super(`the VM of ${disk} is pivoting to QEMU's native graph right now`, 'snapshot again in a moment: after the pivot it is taken through QEMU');
  }
}

/** Another live snapshot of the same disk is under way. */
export class LiveSnapshotBusy extends LazybootError {
  constructor(disk: string) {
    super(`a snapshot of ${disk} is under way already`, 'wait for it to finish, then snapshot again');
  }
}

/** The guest agent did not freeze the guest's file systems. */
export class GuestFreezeFailed extends LazybootError {
  constructor(detail: string) {
    super(`the guest's file systems could not be frozen: ${detail}`, 'check qemu-guest-agent in the guest (guest-fsfreeze-freeze), or snapshot without freezing (--no-freeze: crash-consistent)');
  }
}

/** The guest agent did not thaw the guest's file systems (they may still be frozen). */
export class GuestThawFailed extends LazybootError {
  constructor(detail: string) {
    super(`the guest's file systems could not be thawed: ${detail}`, 'the guest may hang on writes: retry with the agent (guest-fsfreeze-thaw) or stop the VM');
  }
}
