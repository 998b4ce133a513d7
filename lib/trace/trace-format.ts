// The boot trace file: the order in which a boot first read the image's data blocks, with the time
// of each read since the boot's first read. One file is one recorded boot of one image version.
// Layout (little-endian):
//   "LZBTRACE"  u16 format version  u16 image-ref length  32-byte manifest digest
//   u32 block size  u32 block count of the image  f64 recorded at (ms since epoch)
//   u32 storage-ready ms  u32 ready ms (NO_MILESTONE when not reached)  u32 entries
//   image ref (utf-8)  entries × (u32 block, u32 ms)  SHA-256 of everything before it
// A file is refused, never half used, when its magic, version, checksum, length or manifest
// digest do not match (decodeTrace throws TraceRefused saying which).
import { createHash } from 'node:crypto';
import { TraceRefused } from './errors.js';

export const TRACE_MAGIC = 'LZBTRACE';
export const TRACE_FORMAT_VERSION = 1;
/** A milestone the recorded boot did not reach. */
export const NO_MILESTONE = 0xffffffff;
const FIXED_HEADER_BYTES = 8 + 2 + 2 + 32 + 4 + 4 + 8 + 4 + 4 + 4;
const ENTRY_BYTES = 8;
const CHECKSUM_BYTES = 32;

export interface TraceEntry {
  readonly block: number;
  /** Milliseconds since the boot's first read. */
  readonly ms: number;
}

export interface BootTrace {
  /** SHA-256 (hex) of the encoded manifest of the image version the boot read. */
  readonly manifestDigest: string;
  /** `NAME@N`, for people (the digest is what binds the trace). */
  readonly imageRef: string;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly recordedAt: number;
  /** Ms since the first read when the guest's storage driver was up, and when it was ready. */
  readonly storageReadyMs?: number;
  readonly readyMs?: number;
  /** Data blocks in the order they were first read, each once. */
  readonly entries: readonly TraceEntry[];
}

export function encodeTrace(trace: BootTrace): Buffer {
  const ref = Buffer.from(trace.imageRef, 'utf8');
  const body = Buffer.alloc(FIXED_HEADER_BYTES + ref.length + trace.entries.length * ENTRY_BYTES);
  let at = body.write(TRACE_MAGIC, 0, 'latin1');
  at = body.writeUInt16LE(TRACE_FORMAT_VERSION, at);
  at = body.writeUInt16LE(ref.length, at);
  at += Buffer.from(trace.manifestDigest, 'hex').copy(body, at);
  at = body.writeUInt32LE(trace.blockSize, at);
  at = body.writeUInt32LE(trace.blockCount, at);
  at = body.writeDoubleLE(trace.recordedAt, at);
  at = body.writeUInt32LE(milestone(trace.storageReadyMs), at);
  at = body.writeUInt32LE(milestone(trace.readyMs), at);
  at = body.writeUInt32LE(trace.entries.length, at);
  at += ref.copy(body, at);
  for (const entry of trace.entries) {
    at = body.writeUInt32LE(entry.block, at);
    at = body.writeUInt32LE(Math.min(Math.round(entry.ms), NO_MILESTONE - 1), at);
  }
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

function milestone(ms: number | undefined): number {
  return ms === undefined ? NO_MILESTONE : Math.min(Math.round(ms), NO_MILESTONE - 1);
}

/**
 * Decodes a trace file; with `expectedDigest`, also refuses a trace of another image version.
 * Throws TraceRefused (the reason in one line) for anything that does not match.
 */
export function decodeTrace(bytes: Buffer, expectedDigest?: string): BootTrace {
  if (bytes.length < FIXED_HEADER_BYTES + CHECKSUM_BYTES) throw new TraceRefused(`truncated: ${bytes.length} bytes, shorter than a trace header`);
  if (bytes.toString('latin1', 0, 8) !== TRACE_MAGIC) throw new TraceRefused('not a boot trace (bad magic)');
  const version = bytes.readUInt16LE(8);
  if (version !== TRACE_FORMAT_VERSION) throw new TraceRefused(`format version ${version}, this lazyboot reads version ${TRACE_FORMAT_VERSION}`);
  const refLength = bytes.readUInt16LE(10);
  const entryCount = bytes.readUInt32LE(FIXED_HEADER_BYTES - 4);
  const expectedLength = FIXED_HEADER_BYTES + refLength + entryCount * ENTRY_BYTES + CHECKSUM_BYTES;
  if (bytes.length < expectedLength) throw new TraceRefused(`truncated: ${bytes.length} bytes where its header promises ${expectedLength}`);
  if (bytes.length > expectedLength) throw new TraceRefused(`${bytes.length - expectedLength} bytes of trailing garbage`);
  const bodyEnd = expectedLength - CHECKSUM_BYTES;
  if (!createHash('sha256').update(bytes.subarray(0, bodyEnd)).digest().equals(bytes.subarray(bodyEnd))) throw new TraceRefused('checksum mismatch (the file is corrupt)');
  const manifestDigest = bytes.toString('hex', 12, 44);
  if (expectedDigest !== undefined && manifestDigest !== expectedDigest) {
    throw new TraceRefused(`recorded for another image version (manifest ${manifestDigest.slice(0, 16)}…, this one is ${expectedDigest.slice(0, 16)}…)`);
  }
  const blockSize = bytes.readUInt32LE(44);
  const blockCount = bytes.readUInt32LE(48);
  const recordedAt = bytes.readDoubleLE(52);
  const storageReady = bytes.readUInt32LE(60);
  const ready = bytes.readUInt32LE(64);
  const imageRef = bytes.toString('utf8', FIXED_HEADER_BYTES, FIXED_HEADER_BYTES + refLength);
  const entries: TraceEntry[] = [];
  for (let at = FIXED_HEADER_BYTES + refLength; at < bodyEnd; at += ENTRY_BYTES) {
    const block = bytes.readUInt32LE(at);
    if (block >= blockCount) throw new TraceRefused(`names block ${block} of an image of ${blockCount} blocks`);
    entries.push({ block, ms: bytes.readUInt32LE(at + 4) });
  }
  return {
    manifestDigest, imageRef, blockSize, blockCount, recordedAt, entries,
    ...(storageReady !== NO_MILESTONE ? { storageReadyMs: storageReady } : {}),
    ...(ready !== NO_MILESTONE ? { readyMs: ready } : {}),
  };
}
