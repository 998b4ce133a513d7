// The write path on the wire: HTTP/1.1 beside the NBD server of `repo serve` (a unix socket or a
// loopback port of its own). Every route maps one WriteTarget method (lib/repo/write-target.ts):
//
//   GET  /v1/manifests/REF   → the encoded manifest (404: no such image)
//   POST /v1/sessions        JSON {name, parent?, size, blockSize} → JSON {version}
//   POST /v1/missing         n × 32-byte digests → n bytes, 1 where the repository lacks the block
//   POST /v1/blocks          frames [32-byte digest | u32 BE length | data]… → JSON {stored, present},
//                            answered once the blocks are durable (nothing is stored on any error)
//   POST /v1/commits         [u32 BE JSON length | JSON {name, version, parent?, size, blockSize,
//                            session} | digests] → JSON {ref, version, manifestDigest, existing}
//   POST   /v1/objects       [u32 BE JSON length | JSON {image, kind, session, keep?, replace?} | data]
//                            → JSON {image, kind, id, existing}   (an object attached to a version)
//   GET    /v1/objects?kind=KIND[&image=REF]   → JSON [{image, kind, id, bytes, created}…]
//   GET    /v1/objects/REF/KIND/ID             → the object's bytes (404: none)
//   DELETE /v1/objects/REF/KIND                → JSON {removed}
//
// A refusal is a 4xx/5xx with JSON {error: CLASS, message, hint}: the client raises the same
// typed error class the repository raised.
import { LazybootError } from '../base/errors.js';
import {
  BlockCorrupt, BlockDigestMismatch, BlockMissing, ImageShapeMismatch, InvalidBlockSize, InvalidImageName, MalformedWriteRequest,
  NotARepository, RepositoryCorrupt, UnknownImage, UnknownParent, VersionConflict,
} from '../repo/errors.js';
import { DIGEST_BYTES } from '../repo/manifest-format.js';

export const API_PREFIX = '/v1';
export const FRAME_HEADER_BYTES = DIGEST_BYTES + 4;
export const MAX_JSON_BYTES = 64 * 1024;
/** One missing-query: 1 Mi digests (32 MiB); clients ask in smaller pieces. */
export const MAX_MISSING_BYTES = 32 * 1024 * 1024;
/** A commit's digest table: 2^25 blocks (2 TiB at 64 KiB blocks). */
export const MAX_COMMIT_BYTES = 4 + MAX_JSON_BYTES + 2 ** 25 * DIGEST_BYTES;

/** An object and its commit header (objects are at most 4 MiB). */
export const MAX_OBJECT_COMMIT_BYTES = 4 + MAX_JSON_BYTES + 4 * 1024 * 1024;

/** The error classes that cross the wire as themselves (by name); others arrive as WriteRefused. */
const TYPED_ERRORS: Record<string, abstract new (...args: any[]) => LazybootError> = {
  BlockCorrupt, BlockDigestMismatch, BlockMissing, ImageShapeMismatch, InvalidBlockSize, InvalidImageName, MalformedWriteRequest,
  NotARepository, RepositoryCorrupt, UnknownImage, UnknownParent, VersionConflict,
};

/** A refusal by the repository that has no class of its own on this side. */
export class WriteRefused extends LazybootError {}

export interface WireError {
  readonly error: string;
  readonly message: string;
  readonly hint?: string;
}

/** HTTP status for a refusal: the client's fault (4xx) or the repository's (5xx). */
export function statusOf(error: unknown): number {
  if (error instanceof UnknownImage || error instanceof UnknownParent) return 404;
  if (error instanceof VersionConflict) return 409;
  if (error instanceof BlockDigestMismatch || error instanceof ImageShapeMismatch || error instanceof BlockMissing) return 422;
  if (error instanceof MalformedWriteRequest || error instanceof InvalidImageName || error instanceof InvalidBlockSize) return 400;
  return 500;
}

export function toWireError(error: unknown): WireError {
  if (error instanceof LazybootError) return { error: error.name, message: error.message, ...(error.hint ? { hint: error.hint } : {}) };
  return { error: 'InternalError', message: `the repository server failed: ${(error as Error).message ?? String(error)}`, hint: 'see the server\'s log' };
}

/** The typed error the repository raised, rebuilt from its wire form (same class, message and hint). */
export function fromWireError(wire: WireError): LazybootError {
  const Class = TYPED_ERRORS[wire.error];
  if (!Class) return new WriteRefused(wire.message, wire.hint);
  // A real Error (so every runtime check knows it as one) given the class's prototype: the
  // classes' constructors take their own arguments, and the message is already written.
  const error = new Error(wire.message) as LazybootError;
  Object.setPrototypeOf(error, Class.prototype);
  Object.defineProperties(error, {
    hint: { value: wire.hint, writable: true, configurable: true, enumerable: true },
    name: { value: wire.error, writable: true, configurable: true },
  });
  return error;
}

export function encodeFrameHeader(digest: Buffer, length: number): Buffer {
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  digest.copy(header, 0);
  header.writeUInt32BE(length, DIGEST_BYTES);
  return header;
}

export function encodeCommitBody(json: object, digests: Buffer): Buffer[] {
  const text = Buffer.from(JSON.stringify(json), 'utf8');
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(text.length);
  return [length, text, digests];
}
