// On-disk (and on-wire) encoding of an image manifest, with full validation on decode.
//
// Layout: "LZBMAN01" | u32 header length | header JSON (name, version, size, blockSize, blockCount,
// parent?, created, session?) | blockCount × 32-byte digests | SHA-256 of everything before it.
import { createHash } from 'node:crypto';
import { DIGEST_BYTES, type Manifest } from './manifest-format.js';
import { isValidBlockSize } from './block-size.js';
import { parseImageRef, validateImageName } from './image-name.js';
import { InvalidManifest } from './errors.js';

const MAGIC = Buffer.from('LZBMAN01', 'latin1');
const MAX_HEADER_BYTES = 64 * 1024;

export function encodeManifest(m: Manifest): Buffer {
  checkManifest(m);
  const header: Record<string, unknown> = {
    name: m.name,
    version: m.version,
    size: m.size,
    blockSize: m.blockSize,
    blockCount: m.blockCount,
    created: m.created,
  };
  if (m.parent !== undefined) header.parent = m.parent;
  if (m.session !== undefined) header.session = m.session;
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(headerBytes.length);
  const body = Buffer.concat([MAGIC, length, headerBytes, m.digests]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

export function decodeManifest(bytes: Buffer): Manifest {
  if (bytes.length < MAGIC.length + 4 + DIGEST_BYTES || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new InvalidManifest('wrong magic or too short');
  }
  const body = bytes.subarray(0, bytes.length - DIGEST_BYTES);
  const checksum = bytes.subarray(bytes.length - DIGEST_BYTES);
  if (!createHash('sha256').update(body).digest().equals(checksum)) throw new InvalidManifest('checksum mismatch');
  const headerLength = bytes.readUInt32BE(MAGIC.length);
  const headerStart = MAGIC.length + 4;
  if (headerLength > MAX_HEADER_BYTES || headerStart + headerLength > body.length) throw new InvalidManifest('header length out of range');
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(bytes.subarray(headerStart, headerStart + headerLength).toString('utf8'));
  } catch {
    throw new InvalidManifest('header is not JSON');
  }
  if (typeof header !== 'object' || header === null) throw new InvalidManifest('header is not an object');
  // A view, not a copy: for 10 GiB the digests are 5 MiB (500 MiB for 1 TiB) of garbage otherwise.
  // Callers hand over `bytes` (a fresh read) and never change it.
  const digests = body.subarray(headerStart + headerLength);
  const manifest: Manifest = {
    name: header.name as string,
    version: header.version as number,
    size: header.size as number,
    blockSize: header.blockSize as number,
    blockCount: header.blockCount as number,
    digests,
    created: header.created as string,
    ...(header.parent !== undefined ? { parent: header.parent as string } : {}),
    ...(header.session !== undefined ? { session: header.session as string } : {}),
  };
  checkManifest(manifest);
  return manifest;
}

function checkManifest(m: Manifest): void {
  if (typeof m.name !== 'string') throw new InvalidManifest('name is not a string');
  try {
    validateImageName(m.name);
    if (m.parent !== undefined) {
      if (typeof m.parent !== 'string' || parseImageRef(m.parent).version === undefined) throw new Error('parent');
    }
  } catch {
    throw new InvalidManifest(`bad name or parent in ${JSON.stringify(m.name)}`);
  }
  if (m.session !== undefined && (typeof m.session !== 'string' || !/^[A-Za-z0-9_-]{8,64}$/.test(m.session))) throw new InvalidManifest('session is not a session id');
  if (!Number.isSafeInteger(m.version) || m.version < 1) throw new InvalidManifest('version is not a positive integer');
  if (!Number.isSafeInteger(m.size) || m.size < 0) throw new InvalidManifest('size is not a non-negative integer');
  if (!isValidBlockSize(m.blockSize)) throw new InvalidManifest(`block size ${m.blockSize} is not a power of two from 4K to 4M`);
  if (m.blockCount !== Math.ceil(m.size / m.blockSize)) throw new InvalidManifest('block count does not match size / block size');
  if (!Buffer.isBuffer(m.digests) || m.digests.length !== m.blockCount * DIGEST_BYTES) throw new InvalidManifest('digest table has the wrong length');
  if (typeof m.created !== 'string' || Number.isNaN(Date.parse(m.created))) throw new InvalidManifest('created is not a date');
}
