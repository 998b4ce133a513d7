// Encoding of a pack's index file: which digests a pack holds, and where.
//
// Layout: "LZBIDX01" | u32 entry count | entries (32-byte digest, u64 offset, u32 length) | SHA-256
// of everything before it. Written once, atomically, after its pack is durable.
import { createHash } from 'node:crypto';
import { DIGEST_BYTES } from './manifest-format.js';

const MAGIC = Buffer.from('LZBIDX01', 'latin1');
const ENTRY_BYTES = DIGEST_BYTES + 8 + 4;

export interface PackIndexEntry {
  readonly digest: Buffer;
  readonly offset: number;
  readonly length: number;
}

export function encodePackIndex(entries: readonly PackIndexEntry[]): Buffer {
  const body = Buffer.alloc(MAGIC.length + 4 + entries.length * ENTRY_BYTES);
  MAGIC.copy(body, 0);
  body.writeUInt32BE(entries.length, MAGIC.length);
  let at = MAGIC.length + 4;
  for (const entry of entries) {
    entry.digest.copy(body, at);
    body.writeBigUInt64BE(BigInt(entry.offset), at + DIGEST_BYTES);
    body.writeUInt32BE(entry.length, at + DIGEST_BYTES + 8);
    at += ENTRY_BYTES;
  }
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/** Returns the entries, or a one-phrase reason why the bytes are not a valid index. */
export function decodePackIndex(bytes: Buffer): PackIndexEntry[] | string {
  if (bytes.length < MAGIC.length + 4 + DIGEST_BYTES || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) return 'has a wrong magic or is too short';
  const body = bytes.subarray(0, bytes.length - DIGEST_BYTES);
  if (!createHash('sha256').update(body).digest().equals(bytes.subarray(bytes.length - DIGEST_BYTES))) return 'fails its checksum';
  const count = body.readUInt32BE(MAGIC.length);
  if (body.length !== MAGIC.length + 4 + count * ENTRY_BYTES) return 'has a wrong length';
  const entries: PackIndexEntry[] = [];
  for (let i = 0, at = MAGIC.length + 4; i < count; i++, at += ENTRY_BYTES) {
    // Offsets are u64 on disk; beyond 2^53 a Number would round, so such an index is refused
    // (and the offset printed exactly, as a BigInt).
    const offset = body.readBigUInt64BE(at + DIGEST_BYTES);
    if (offset > BigInt(Number.MAX_SAFE_INTEGER)) return `has entry ${i} at offset ${offset}, beyond 2^53`;
    entries.push({ digest: body.subarray(at, at + DIGEST_BYTES), offset: Number(offset), length: body.readUInt32BE(at + DIGEST_BYTES + 8) });
  }
  return entries;
}
