// The repository's write path as one interface: a session adds blocks (offering digests first, so
// only blocks the repository lacks travel), then commits a named object atomically: an image
// version, or a small object attached to one (a boot trace: image-objects.ts). Implemented
// in-process over a repository directory (repository-writer.ts) and over the wire (lib/write/).
// Commits are create-only and carry a session id: a retried commit of the same session and
// content returns the version it already made instead of adding another.

export interface SessionRequest {
  /** The image name the session will commit a version of. */
  readonly name: string;
  /** `NAME@N` the new version derives from (its size and block size must match), if any. */
  readonly parent?: string;
  readonly size: number;
  readonly blockSize: number;
}

export interface SessionStart {
  /** The version a commit of this session will create (another writer taking it first is a VersionConflict). */
  readonly version: number;
}

export interface OfferedBlock {
  /** SHA-256 of `data` (checked by the repository). */
  readonly digest: Buffer;
  readonly data: Buffer;
}

export interface StoredBlocks {
  /** Blocks written now. */
  readonly stored: number;
  /** Blocks the repository held already (another writer added them since the offer). */
  readonly present: number;
}

export interface ImageCommit {
  readonly name: string;
  readonly version: number;
  readonly parent?: string;
  readonly size: number;
  readonly blockSize: number;
  /** blockCount × 32-byte digests (32 zero bytes for an all-zero block). */
  readonly digests: Buffer;
  /** Names this session, for retries (letters, digits, `-`, `_`; 8–64 characters). */
  readonly session: string;
}

export interface CommitResult {
  /** `NAME@N`. */
  readonly ref: string;
  readonly version: number;
  /** SHA-256 (hex) of the encoded manifest, as a map records it. */
  readonly manifestDigest: string;
  /** True when a retry found the version this session had already committed. */
  readonly existing: boolean;
}

export interface ObjectCommit {
  /** The image version the object belongs to: `NAME@N` (it must exist). */
  readonly image: string;
  /** What it is (`trace`): lowercase letters, digits, `-`. */
  readonly kind: string;
  /** The whole object (at most 4 MiB: objects are metadata, they travel with their commit). */
  readonly data: Buffer;
  /** Names the session and the object: a retry with the same session and data finds it. */
  readonly session: string;
  /** Keep at most this many objects of this kind of the version: the oldest others go. */
  readonly keep?: number;
  /** Remove every other object of this kind of the version (the new one replaces them). */
  readonly replace?: boolean;
}

export interface ObjectCommitResult {
  readonly image: string;
  readonly kind: string;
  readonly id: string;
  /** True when a retry found the object this session had already committed. */
  readonly existing: boolean;
}

export interface ObjectSummary {
  /** `NAME@N`. */
  readonly image: string;
  readonly kind: string;
  readonly id: string;
  readonly bytes: number;
  /** When it was committed (ms since epoch). */
  readonly created: number;
}

export interface WireCounters {
  /** Bytes this client sent and received on the wire (0 for an in-process repository). */
  readonly bytesSent: number;
  readonly bytesReceived: number;
}

export interface WriteTarget {
  /** The URI as given (for messages). */
  readonly uri: string;
  /** The encoded manifest of REF, or undefined when the repository has no such image. */
  manifest(ref: string): Promise<Buffer | undefined>;
  /** Checks the session's name, parent and shape; says which version its commit will create. */
  begin(request: SessionRequest): Promise<SessionStart>;
  /** One byte per offered digest (n × 32 bytes): 1 where the repository lacks the block. */
  missing(digests: Buffer): Promise<Uint8Array>;
  /** Stores the blocks; they are durable when this resolves (nothing is stored if it rejects). */
  putBlocks(blocks: Iterable<OfferedBlock> | AsyncIterable<OfferedBlock>): Promise<StoredBlocks>;
  /** Creates `NAME@version` atomically and durably, or returns the version this session made before. */
  commitImage(commit: ImageCommit): Promise<CommitResult>;
  /** Creates the object atomically and durably (create-only; see ObjectCommit for keep and replace). */
  commitObject(commit: ObjectCommit): Promise<ObjectCommitResult>;
  /** The objects of a kind, of one image version (`NAME@N`) or of all; oldest first. */
  listObjects(kind: string, image?: string): Promise<ObjectSummary[]>;
  /** One object's bytes, or undefined when there is no such object. */
  readObject(image: string, kind: string, id: string): Promise<Buffer | undefined>;
  /** Removes every object of this kind of the version; says how many there were. */
  removeObjects(image: string, kind: string): Promise<number>;
  wire(): WireCounters;
  close(): Promise<void>;
}

/** Session ids: what a manifest accepts (see manifest-codec). */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
