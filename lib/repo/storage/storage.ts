// Where a repository's files live, as the repository sees it: named objects ("packs/pack-….idx",
// "manifests/NAME/N.manifest") that are read whole or by range, listed one level at a time, and
// written atomically — replaced, created only if absent, or streamed in. Two implementations: a
// local directory (directory-storage.ts) and an S3 bucket + prefix (s3-storage.ts). Everything
// above (packs, indexes, manifests, versions) is one piece of code in the repository.

/** One name under a listed prefix: a stored object (file) or a deeper level (directory). */
export interface StoredEntry {
  readonly name: string;
  readonly kind: 'file' | 'directory' | 'other';
  /** Bytes of a stored object, where the listing tells it for free (S3; a directory leaves it out). */
  readonly size?: number;
  /** When the object was stored, where the listing tells it (S3's LastModified). */
  readonly modified?: Date;
}

/** A multipart upload begun under the repository and never completed or aborted (S3). */
export interface UnfinishedUpload {
  /** The key it would have created. */
  readonly key: string;
  readonly started: Date;
  /** Drops its parts. */
  abort(): Promise<void>;
}

/** Reads byte ranges of one stored object (keeps what makes re-reads cheap, e.g. an open file). */
export interface RangeReader {
  /** Reads exactly `length` bytes at `position` into `target` at `targetOffset`. */
  readInto(target: Buffer, targetOffset: number, length: number, position: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * How reads of one storage are best shaped, by what a request costs there: the repository's image
 * reader (image-backend.ts) joins the blocks of a read that lie together in a pack into ranges of
 * this shape.
 */
export interface ReadShape {
  /** The longest byte range one read asks for. */
  readonly maxRangeBytes: number;
  /**
   * Where a request costs more than a copy (an object store): pieces of one object up to this many
   * bytes apart are read with one request (the bytes between are dropped) and copied to wherever the
   * read wants each. Undefined (a local file): one read per range that is contiguous both in the
   * object and in the read, straight into place.
   */
  readonly joinGapBytes?: number;
}

/** A large object written in pieces; invisible under its key until finish() (S3), or unreferenced until its index exists (directory). */
export interface ObjectUpload {
  /** Appends `chunk`; the caller may reuse it once the promise resolves. */
  write(chunk: Buffer): Promise<void>;
  /** Makes the object durable and complete. */
  finish(): Promise<void>;
  /** Drops everything written. */
  abort(): Promise<void>;
}

export interface RepositoryStorage {
  /** What the user named: a directory path or `s3://BUCKET/PREFIX`. */
  readonly location: string;
  readonly readShape: ReadShape;
  /** Whether keys are files in a local directory (where `repo check` inspects modes, temp files, …). */
  readonly isLocalDirectory: boolean;
  /** The full path or URI of one object, for messages. */
  describe(key: string): string;
  /** The whole object, or undefined when there is none (other failures throw). */
  get(key: string): Promise<Buffer | undefined>;
  /** The names one level below `prefix` ('' for the top); throws if `prefix` cannot be listed. */
  list(prefix: string): Promise<StoredEntry[]>;
  /** Creates or replaces the object atomically and durably. */
  put(key: string, data: Buffer): Promise<void>;
  /** Creates the object atomically and durably only if absent; false when another writer got there first. */
  putIfAbsent(key: string, data: Buffer): Promise<boolean>;
  /** Starts writing a large object under `key` (which must not exist yet). */
  upload(key: string): ObjectUpload;
  openRange(key: string): RangeReader;
  delete(key: string): Promise<void>;
  /** Uploads under the repository that were begun and never finished (a store without multipart has none). */
  unfinishedUploads?(): Promise<UnfinishedUpload[]>;
  /** Whether nothing at all is stored (a repository may be created only there). */
  isEmpty(): Promise<boolean>;
  close(): Promise<void>;
}
