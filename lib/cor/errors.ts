// Typed errors of the copy-on-read device.
import { LazybootError } from '../base/errors.js';
import { FileSystemFailed } from '../base/system-error.js';
import { DigestMismatch } from '../fetch/errors.js';

/** The local disk exists but has another size than the image. */
export class DiskSizeMismatch extends LazybootError {
  constructor(disk: string, actual: number, expected: number) {
    super(`${disk} is ${actual} bytes but the image is ${expected} bytes`, 'use another --disk, or delete this one to start over');
  }
}

/** The map exists but its disk does not: a new file would not hold what the map says is present. */
export class DiskMissing extends LazybootError {
  constructor(disk: string) {
    super(`${disk} is missing but its map ${disk}.map is still there (the map says which blocks the disk holds)`,
      `put the disk back, or delete ${disk}.map to start over (blocks are fetched again; unshipped writes are lost)`);
  }
}

/** `--disk` names something that cannot hold a disk image (a directory, a character device, …). */
export class DiskNotADisk extends LazybootError {
  constructor(disk: string) {
    super(`${disk} is neither a regular file nor a block device`, 'pass a raw disk file (created if missing) or a block device as --disk');
  }
}

/** The map describes another disk than the file found at its path (replaced, recreated, or changed). */
export class DiskNotBound extends LazybootError {
  constructor(disk: string, reason: string) {
    super(`${disk}.map does not describe ${disk}: ${reason}`,
      `put the original disk back, or delete ${disk}.map to start over (blocks are fetched again; unshipped writes are lost)`);
  }
}

/** `disk fill` gave up: a block could not be fetched (damaged in the repository, or none reachable). */
export class FillFailed extends LazybootError {
  constructor(disk: string, image: string, error: Error) {
    const damaged = [error, error.cause].find((e): e is DigestMismatch => e instanceof DigestMismatch);
    super(`fill of ${disk} stopped: ${error.message}`, damaged
      ? `${damaged.source} holds a damaged copy of block ${damaged.block} of ${image}: check that repository (\`lazyboot image info ${image} --verify\` where it lives), re-import the image or pass a --from with a good copy; what was fetched is kept and fill resumes`
      : 'check that the repositories are reachable and run fill again; what was fetched is kept and fill resumes');
  }
}

/** A file of the disk could not be opened, read or written (permissions, a full filesystem, …). */
export class DiskIoFailed extends FileSystemFailed {}

export class DiskInUse extends LazybootError {
  constructor(disk: string, holder: number | undefined) {
    super(`${disk} is in use by ${holder ? `process ${holder}` : 'another process'}`, 'stop that process first (one lazyboot process per disk)');
  }
}

/** `--disk` names a file in a directory that does not exist (or is not a directory). */
export class DiskDirectoryMissing extends LazybootError {
  constructor(disk: string, directory: string, reason: string) {
    super(`cannot use ${disk}: its directory ${directory} ${reason}`, 'create the directory first, or pass another --disk');
  }
}
