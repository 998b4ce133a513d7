// Typed errors of the image repository: each says in one line what is wrong and what to do.
import { LazybootError } from '../base/errors.js';
import { exactInteger } from './exact-integer.js';

/** No image (or no such version) by that name. */
export class UnknownImage extends LazybootError {
  constructor(readonly ref: string, hint = 'see `lazyboot image ls` for the images this repository holds') {
    super(`unknown image ${JSON.stringify(ref)}`, hint);
  }
}

/** An image name or reference that breaks the naming rules. */
export class InvalidImageName extends LazybootError {
  constructor(readonly value: string, reason: string) {
    super(`invalid image name ${JSON.stringify(value)} (${reason})`, 'start with a letter or digit, then use letters, digits, ".", "_", "-" and "+", at most 128 characters');
  }
}

/** A block size outside 4 KiB..4 MiB or not a power of two. */
export class InvalidBlockSize extends LazybootError {
  constructor(readonly value: string | number) {
    super(`invalid block size ${JSON.stringify(String(value))}`, 'use a power of two from 4K to 4M, e.g. 64K');
  }
}

/** A repository file that is missing, truncated or does not decode. Names the file. */
export class RepositoryCorrupt extends LazybootError {
  constructor(readonly file: string, readonly problem: string, options?: ErrorOptions) {
    super(`repository file ${file} ${problem}`, 'restore the repository from a copy, or re-import the affected images', options);
  }
}

/** A block a manifest refers to is not in the repository. */
export class BlockMissing extends LazybootError {
  constructor(readonly digest: string, where: string) {
    super(`block ${digest} is missing from the repository (${where})`, 're-import the image, or restore the repository from a copy');
  }
}

/** A stored block whose content does not hash to its digest. */
export class BlockCorrupt extends LazybootError {
  constructor(readonly digest: string, readonly file: string, offset: number | bigint) {
    super(`block ${digest} in ${file} at offset ${exactInteger(offset)} is corrupt (SHA-256 mismatch)`, 're-import the image, or restore the repository from a copy');
  }
}

/** A source file lazyboot cannot read as a disk image. */
export class ImportFailed extends LazybootError {}

/** `image export` could not write its destination (which is left as it was). */
export class ExportFailed extends LazybootError {}

/**
 * An image file lazyboot will not import as given, because reading it could read something other
 * than the file itself (a backing file, an external data file, a probed format) or is not a disk.
 */
export class UnsafeImage extends LazybootError {}

/** A directory that is not a lazyboot repository (or of a format this version does not read). */
export class NotARepository extends LazybootError {
  constructor(readonly dir: string, what: string, hint = 'pass --repo with a repository directory, or an empty or new directory to import into') {
    super(`${dir} is not a lazyboot repository (${what})`, hint);
  }
}

/** `repo check` found damage that is still there (after --repair, if given). */
export class RepositoryDamaged extends LazybootError {}

/** A write session names a parent version the repository does not hold. */
export class UnknownParent extends LazybootError {
  constructor(readonly ref: string) {
    super(`parent image ${ref} is not in the repository`, 'start the session from a version it holds (see `lazyboot image ls`), or from none');
  }
}

/** A new version whose size or block size differs from its parent's, or a block of the wrong length. */
export class ImageShapeMismatch extends LazybootError {
  constructor(what: string) {
    super(what, 'a new version keeps its parent\'s size and block size; every block but the last is one block long');
  }
}

/** An offered block whose bytes do not hash to the digest it was offered under. */
export class BlockDigestMismatch extends LazybootError {
  constructor(readonly offered: string, readonly actual: string) {
    super(`block offered as ${offered} hashes to ${actual}`, 'the sender read changing or damaged data: retry; nothing of this batch was stored');
  }
}

/** Another writer committed the version this session was to create (create-only, like link(2)). */
export class VersionConflict extends LazybootError {
  constructor(readonly ref: string) {
    super(`${ref} was committed by another writer while this session ran`, 'start again from the new latest version, or commit under another name');
  }
}

/** A request the repository's write path cannot parse (wrong framing, lengths, JSON). */
export class MalformedWriteRequest extends LazybootError {
  constructor(problem: string) {
    super(`malformed write request: ${problem}`, 'use a lazyboot client of the same version');
  }
}

/** The object store holding a repository refused or could not be reached (credentials, bucket, endpoint). */
export class StoreUnavailable extends LazybootError {}
