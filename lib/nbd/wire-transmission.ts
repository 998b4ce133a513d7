// The NBD transmission phase on the wire: request headers, simple replies and structured reply
// chunks (data, hole, error, block status). Pure functions of bytes; numbers from protocol.ts.
import * as P from './protocol.js';
import { readOffset, writeOffset } from './wire-offset.js';

export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const CHUNK_HEADER_BYTES = 20;
/** A chunk header followed by the 64-bit offset that starts OFFSET_DATA and OFFSET_HOLE chunks. */
export const OFFSET_CHUNK_HEADER_BYTES = 28;

/** One request header. The cookie (the spec's "handle") is the client's; the server echoes it. */
export interface RequestHeader {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offset: number;
  readonly length: number;
}

export function encodeRequest(request: RequestHeader, out: Buffer = Buffer.allocUnsafe(REQUEST_HEADER_BYTES)): Buffer {
  out.writeUInt32BE(P.REQUEST_MAGIC, 0);
  out.writeUInt16BE(request.flags, 4);
  out.writeUInt16BE(request.type, 6);
  out.writeBigUInt64BE(request.cookie, 8);
  writeOffset(out, request.offset, 16);
  out.writeUInt32BE(request.length, 24);
  return out;
}

/** undefined when the magic is wrong (the connection is out of step: close it). */
export function decodeRequest(bytes: Buffer): RequestHeader | undefined {
  if (bytes.readUInt32BE(0) !== P.REQUEST_MAGIC) return undefined;
  return {
    flags: bytes.readUInt16BE(4),
    type: bytes.readUInt16BE(6),
    cookie: bytes.readBigUInt64BE(8),
    offset: readOffset(bytes, 16),
    length: bytes.readUInt32BE(24),
  };
}

export function encodeSimpleReply(cookie: bigint, errno: number): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  out.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(errno, 4);
  out.writeBigUInt64BE(cookie, 8);
  return out;
}

/** undefined when it is not a simple reply. */
export function decodeSimpleReply(bytes: Buffer): { errno: number; cookie: bigint } | undefined {
  if (bytes.readUInt32BE(0) !== P.SIMPLE_REPLY_MAGIC) return undefined;
  return { errno: bytes.readUInt32BE(4), cookie: bytes.readBigUInt64BE(8) };
}

/** The 20-byte header of a structured reply chunk whose payload is `length` bytes. */
export function encodeChunkHeader(cookie: bigint, flags: number, type: number, length: number, out: Buffer = Buffer.allocUnsafe(CHUNK_HEADER_BYTES)): Buffer {
  out.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  out.writeBigUInt64BE(cookie, 8);
  out.writeUInt32BE(length, 16);
  return out;
}

/** The header of an OFFSET_DATA chunk carrying `dataLength` bytes read at `offset` (data follows). */
export function encodeDataChunkHeader(cookie: bigint, flags: number, offset: number, dataLength: number): Buffer {
  const out = Buffer.allocUnsafe(OFFSET_CHUNK_HEADER_BYTES);
  encodeChunkHeader(cookie, flags, P.REPLY_TYPE_OFFSET_DATA, 8 + dataLength, out);
  writeOffset(out, offset, 20);
  return out;
}

/** A whole OFFSET_HOLE chunk: `length` bytes of zeros at `offset`. */
export function encodeHoleChunk(cookie: bigint, flags: number, offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(OFFSET_CHUNK_HEADER_BYTES + 4);
  encodeChunkHeader(cookie, flags, P.REPLY_TYPE_OFFSET_HOLE, 12, out);
  writeOffset(out, offset, 20);
  out.writeUInt32BE(length, 28);
  return out;
}

/** Longest error message sent in an error chunk (the spec allows more; clients print one line). */
const MAX_ERROR_MESSAGE_CHARS = 200;

/** A whole ERROR chunk: the errno and a message for the client's log. */
export function encodeErrorChunk(cookie: bigint, flags: number, errno: number, message: string): Buffer {
  const text = Buffer.from(message.slice(0, MAX_ERROR_MESSAGE_CHARS), 'utf8');
  const out = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + 6 + text.length);
  encodeChunkHeader(cookie, flags, P.REPLY_TYPE_ERROR, 6 + text.length, out);
  out.writeUInt32BE(errno, 20);
  out.writeUInt16BE(text.length, 24);
  text.copy(out, 26);
  return out;
}

/** One base:allocation descriptor: `length` bytes in the state of `flags` (STATE_HOLE, STATE_ZERO). */
export interface StatusDescriptor {
  readonly length: number;
  readonly flags: number;
}

/** A whole BLOCK_STATUS chunk for one meta context. */
export function encodeBlockStatusChunk(cookie: bigint, flags: number, contextId: number, descriptors: readonly StatusDescriptor[]): Buffer {
  const payloadLength = 4 + descriptors.length * 8;
  const out = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + payloadLength);
  encodeChunkHeader(cookie, flags, P.REPLY_TYPE_BLOCK_STATUS, payloadLength, out);
  out.writeUInt32BE(contextId, 20);
  descriptors.forEach(({ length, flags: state }, i) => {
    out.writeUInt32BE(length, 24 + i * 8);
    out.writeUInt32BE(state, 28 + i * 8);
  });
  return out;
}
