// The NBD wire format, written once: every header and payload the server, the client, the refusal
// path and the tests' raw peer put on or take off the wire is encoded and decoded here. Pure
// functions of bytes (no sockets); the numbers come from protocol.ts.
import * as P from './protocol.js';

export const GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const CHUNK_HEADER_BYTES = 20;
/** A chunk header followed by the 64-bit offset that starts OFFSET_DATA and OFFSET_HOLE chunks. */
export const OFFSET_CHUNK_HEADER_BYTES = 28;

const EMPTY = Buffer.alloc(0);

// Offsets are JavaScript numbers (exact below 2^53, far beyond any export); written as two halves
// so that the hot path needs no BigInt.
function writeOffset(out: Buffer, offset: number, at: number): void {
  out.writeUInt32BE(Math.floor(offset / 2 ** 32), at);
  out.writeUInt32BE(offset >>> 0, at + 4);
}

function readOffset(bytes: Buffer, at: number): number {
  return bytes.readUInt32BE(at) * 2 ** 32 + bytes.readUInt32BE(at + 4);
}

// ---- Handshake ---------------------------------------------------------------------------------

/** The server's first bytes: NBDMAGIC, IHAVEOPT and its handshake flags. */
export function encodeGreeting(handshakeFlags = P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES): Buffer {
  const out = Buffer.alloc(GREETING_BYTES);
  out.writeBigUInt64BE(P.NBDMAGIC, 0);
  out.writeBigUInt64BE(P.IHAVEOPT, 8);
  out.writeUInt16BE(handshakeFlags, 16);
  return out;
}

/** The greeting's handshake flags; a reason instead when it is not a (new-style) NBD greeting. */
export function decodeGreeting(bytes: Buffer): { handshakeFlags: number } | { problem: string } {
  if (bytes.readBigUInt64BE(0) !== P.NBDMAGIC) return { problem: 'not an NBD server (bad magic)' };
  if (bytes.readBigUInt64BE(8) !== P.IHAVEOPT) return { problem: 'server does not speak newstyle NBD' };
  return { handshakeFlags: bytes.readUInt16BE(16) };
}

export function encodeClientFlags(flags: number): Buffer {
  const out = Buffer.alloc(CLIENT_FLAGS_BYTES);
  out.writeUInt32BE(flags >>> 0, 0);
  return out;
}

/** An option from the client: IHAVEOPT, the option, its data's length, then the data. */
export function encodeOption(option: number, data: Buffer = EMPTY): Buffer {
  const out = Buffer.alloc(OPTION_HEADER_BYTES + data.length);
  out.writeBigUInt64BE(P.IHAVEOPT, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(data.length, 12);
  data.copy(out, OPTION_HEADER_BYTES);
  return out;
}

/** An option header announcing `length` bytes of data that are sent (or not) separately. */
export function encodeOptionHeader(option: number, length: number): Buffer {
  const out = encodeOption(option);
  out.writeUInt32BE(length, 12);
  return out;
}

/** undefined when the magic is not IHAVEOPT. */
export function decodeOptionHeader(bytes: Buffer): { option: number; length: number } | undefined {
  if (bytes.readBigUInt64BE(0) !== P.IHAVEOPT) return undefined;
  return { option: bytes.readUInt32BE(8), length: bytes.readUInt32BE(12) };
}

/** The server's reply to an option: header and payload in one buffer. */
export function encodeOptionReply(option: number, type: number, payload: Buffer = EMPTY): Buffer {
  const out = Buffer.alloc(OPTION_REPLY_HEADER_BYTES + payload.length);
  out.writeBigUInt64BE(P.OPT_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  // The error types have bit 31 set: negative as JavaScript numbers, unsigned on the wire.
  out.writeUInt32BE(type >>> 0, 12);
  out.writeUInt32BE(payload.length, 16);
  payload.copy(out, OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** undefined when the magic is wrong. `type` is unsigned: compare with `P.REP_ERR_… >>> 0`. */
export function decodeOptionReplyHeader(bytes: Buffer): { option: number; type: number; length: number } | undefined {
  if (bytes.readBigUInt64BE(0) !== P.OPT_REPLY_MAGIC) return undefined;
  return { option: bytes.readUInt32BE(8), type: bytes.readUInt32BE(12), length: bytes.readUInt32BE(16) };
}

export function isOptionError(type: number): boolean {
  return (type & P.REP_FLAG_ERROR) !== 0;
}

/** The data of NBD_OPT_INFO / NBD_OPT_GO: the export name (length-prefixed), then NBD_INFO requests. */
export function encodeExportRequest(name: string | Buffer, infos: readonly number[] = []): Buffer {
  const nameBytes = Buffer.from(name);
  const out = Buffer.alloc(4 + nameBytes.length + 2 + infos.length * 2);
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  out.writeUInt16BE(infos.length, 4 + nameBytes.length);
  infos.forEach((info, i) => out.writeUInt16BE(info, 6 + nameBytes.length + i * 2));
  return out;
}

/** undefined when malformed (lengths that do not add up). */
export function decodeExportRequest(data: Buffer): { name: string; infos: number[] } | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (4 + nameLength + 2 > data.length) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + count * 2) return undefined;
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(4 + nameLength + 2 + i * 2));
  return { name, infos };
}

/** The data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT; undefined when malformed. */
export function decodeMetaContextRequest(data: Buffer): { exportName: string; queries: string[] } | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (4 + nameLength + 4 > data.length) return undefined;
  const exportName = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt32BE(4 + nameLength);
  const queries: string[] = [];
  let at = 4 + nameLength + 4;
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const length = data.readUInt32BE(at);
    if (at + 4 + length > data.length) return undefined;
    queries.push(data.toString('utf8', at + 4, at + 4 + length));
    at += 4 + length;
  }
  if (at !== data.length) return undefined;
  return { exportName, queries };
}

/** NBD_REP_META_CONTEXT's payload: the context's id, then its name. */
export function encodeMetaContext(contextId: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const out = Buffer.alloc(4 + nameBytes.length);
  out.writeUInt32BE(contextId, 0);
  nameBytes.copy(out, 4);
  return out;
}

/** NBD_REP_SERVER's payload (NBD_OPT_LIST): the name, length-prefixed, then the description. */
export function encodeExportListing(name: string, description = ''): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const descriptionBytes = Buffer.from(description, 'utf8');
  const out = Buffer.alloc(4 + nameBytes.length + descriptionBytes.length);
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  descriptionBytes.copy(out, 4 + nameBytes.length);
  return out;
}

export interface BlockSizeLimits {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

/** What NBD_REP_INFO carries; `other` for information types this project does not read. */
export type ExportInfo =
  | { readonly kind: 'export'; readonly size: number; readonly transmissionFlags: number }
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: 'block-size'; readonly limits: BlockSizeLimits }
  | { readonly kind: 'other'; readonly type: number };

export function encodeInfo(info: Exclude<ExportInfo, { kind: 'other' }>): Buffer {
  switch (info.kind) {
    case 'export': {
      const out = Buffer.alloc(12);
      out.writeUInt16BE(P.INFO_EXPORT, 0);
      writeOffset(out, info.size, 2);
      out.writeUInt16BE(info.transmissionFlags, 10);
      return out;
    }
    case 'name': {
      const name = Buffer.from(info.name, 'utf8');
      const out = Buffer.alloc(2 + name.length);
      out.writeUInt16BE(P.INFO_NAME, 0);
      name.copy(out, 2);
      return out;
    }
    case 'block-size': {
      const out = Buffer.alloc(14);
      out.writeUInt16BE(P.INFO_BLOCK_SIZE, 0);
      out.writeUInt32BE(info.limits.minimum, 2);
      out.writeUInt32BE(info.limits.preferred, 6);
      out.writeUInt32BE(info.limits.maximum, 10);
      return out;
    }
  }
}

export function decodeInfo(payload: Buffer): ExportInfo {
  const type = payload.readUInt16BE(0);
  if (type === P.INFO_EXPORT) return { kind: 'export', size: readOffset(payload, 2), transmissionFlags: payload.readUInt16BE(10) };
  if (type === P.INFO_NAME) return { kind: 'name', name: payload.toString('utf8', 2) };
  if (type === P.INFO_BLOCK_SIZE) {
    return { kind: 'block-size', limits: { minimum: payload.readUInt32BE(2), preferred: payload.readUInt32BE(6), maximum: payload.readUInt32BE(10) } };
  }
  return { kind: 'other', type };
}

/** The server's answer to NBD_OPT_EXPORT_NAME: size and flags, then 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const out = Buffer.alloc(noZeroes ? 10 : 134);
  writeOffset(out, size, 0);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}

// ---- Transmission ------------------------------------------------------------------------------

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

// ---- Names for log lines -----------------------------------------------------------------------

const COMMAND_NAMES: Record<number, string> = {
  [P.CMD_READ]: 'NBD_CMD_READ',
  [P.CMD_WRITE]: 'NBD_CMD_WRITE',
  [P.CMD_DISC]: 'NBD_CMD_DISC',
  [P.CMD_FLUSH]: 'NBD_CMD_FLUSH',
  [P.CMD_TRIM]: 'NBD_CMD_TRIM',
  [P.CMD_CACHE]: 'NBD_CMD_CACHE',
  [P.CMD_WRITE_ZEROES]: 'NBD_CMD_WRITE_ZEROES',
  [P.CMD_BLOCK_STATUS]: 'NBD_CMD_BLOCK_STATUS',
};

/** `NBD_CMD_READ`, …; a number the spec does not name as `command 99`. */
export function commandName(type: number): string {
  return COMMAND_NAMES[type] ?? `command ${type}`;
}

const OPTION_NAMES: Record<number, string> = {
  [P.OPT_EXPORT_NAME]: 'NBD_OPT_EXPORT_NAME',
  [P.OPT_ABORT]: 'NBD_OPT_ABORT',
  [P.OPT_LIST]: 'NBD_OPT_LIST',
  [P.OPT_STARTTLS]: 'NBD_OPT_STARTTLS',
  [P.OPT_INFO]: 'NBD_OPT_INFO',
  [P.OPT_GO]: 'NBD_OPT_GO',
  [P.OPT_STRUCTURED_REPLY]: 'NBD_OPT_STRUCTURED_REPLY',
  [P.OPT_LIST_META_CONTEXT]: 'NBD_OPT_LIST_META_CONTEXT',
  [P.OPT_SET_META_CONTEXT]: 'NBD_OPT_SET_META_CONTEXT',
};

/** `NBD_OPT_GO`, …; a number the spec does not name as `option 99`. */
export function optionName(option: number): string {
  return OPTION_NAMES[option] ?? `option ${option}`;
}

const FLAG_NAMES: Array<[number, string]> = [
  [P.CMD_FLAG_FUA, 'FUA'],
  [P.CMD_FLAG_NO_HOLE, 'NO_HOLE'],
  [P.CMD_FLAG_DF, 'DF'],
  [P.CMD_FLAG_REQ_ONE, 'REQ_ONE'],
  [P.CMD_FLAG_FAST_ZERO, 'FAST_ZERO'],
];

/** Command flags as `FUA|NO_HOLE`; bits the spec does not define as hex. */
export function commandFlagNames(flags: number): string {
  const names: string[] = [];
  let rest = flags;
  for (const [bit, name] of FLAG_NAMES) {
    if (flags & bit) names.push(name);
    rest &= ~bit;
  }
  if (rest) names.push(`0x${rest.toString(16)}`);
  return names.join('|') || 'none';
}
