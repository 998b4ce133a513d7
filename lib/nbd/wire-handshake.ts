// The NBD handshake on the wire: the greeting, client flags, options and option replies, and the
// option data and NBD_INFO payloads they carry. Pure functions of bytes; numbers from protocol.ts.
import * as P from './protocol.js';
import { readOffset, writeOffset } from './wire-offset.js';

export const GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;

const EMPTY = Buffer.alloc(0);

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
