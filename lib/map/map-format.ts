// On-disk layout of `<disk>.map`: two slots (A/B), each a complete, checksummed copy of the map.
//
//   slot = [ 4 KiB header page | R bitset | W bitset × targets ] padded to 4 KiB
//   header page = "LZBMAP01" | u32 format | u32 json length | u64 generation | 32-byte SHA-256 | JSON
//
// The SHA-256 covers the whole slot after the checksum field (the JSON, the padding and all
// bitsets), so a torn slot write is detected. Commits alternate slots by generation: the slot
// being written is never the one recovery would fall back to.
import { createHash } from 'node:crypto';
import { Bitset } from './bitset.js';

export const MAP_MAGIC = Buffer.from('LZBMAP01', 'ascii');
export const MAP_FORMAT_VERSION = 1;
export const HEADER_PAGE = 4096;
export const MAX_TARGETS = 8;
const CHECKSUM_OFFSET = 24;
const JSON_OFFSET = CHECKSUM_OFFSET + 32;

/** What a map is about; fixed at creation. */
export interface MapHeader {
  /** `name@N` of the image this disk holds. */
  readonly image: string;
  /** SHA-256 (hex) of the encoded manifest. */
  readonly manifestDigest: string;
  readonly size: number;
  readonly blockSize: number;
  readonly blockCount: number;
  /** Replication targets (1..8); target i owns W bitset i. */
  readonly targets: readonly string[];
  /**
   * The disk was created sparse together with this map, so an absent block with W clear still
   * reads as zeros (only a guest write, W-intent first, can put other data there).
   */
  readonly diskCreatedSparse?: boolean;
  /** The disk file this map describes (absent in maps made before bindings: those are refused). */
  readonly disk?: DiskBinding;
  /** Per target label: where it ships and what it last committed (see TargetShipping). */
  readonly shipping?: Readonly<Record<string, TargetShipping>>;
}

/**
 * What a replication target has received. A target's W bits mean "changed since `baseline`": the
 * next snapshot to it starts from `baseline`'s digest table and replaces the W blocks.
 */
export interface TargetShipping {
  /** The write URI the target is bound to (canonical spelling, lib/write/open-write-target.ts). */
  readonly uri: string;
  /** The version this disk last committed there (or the image it came from, before any). */
  readonly baseline?: { readonly ref: string; readonly manifestDigest: string };
  /** The write session of that commit: a leftover in-flight set of this session is already shipped. */
  readonly lastSession?: string;
}

/**
 * Binds a map to its disk (checked in lib/cor/disk-binding.ts): a map outliving its disk must
 * never make a new or another file's bytes pass for the image's.
 */
export interface DiskBinding {
  /** `file ino:N born:NS` (inode + birth time) or `block MAJOR:MINOR`. */
  readonly identity: string;
  /**
   * SHA-256 of a sample of present blocks, taken when the map was last closed cleanly. It
   * certifies exactly the bits it was committed with: BlockMap drops it at the first change of
   * any bit, in the same slot write as that change. So a fingerprint found on open vouches for
   * every present block of that map, and lets a disk copied or moved with its map be rebound.
   */
  readonly fingerprint?: DiskFingerprint;
}

export interface DiskFingerprint {
  readonly blocks: readonly number[];
  readonly sha256: string;
}

export interface MapSlot {
  readonly header: MapHeader;
  readonly generation: bigint;
  readonly present: Bitset;
  readonly modified: Bitset[];
}

function pad(bytes: number): number {
  return Math.ceil(bytes / HEADER_PAGE) * HEADER_PAGE;
}

export function slotSize(header: Pick<MapHeader, 'blockCount' | 'targets'>): number {
  return HEADER_PAGE + pad(Bitset.bytesFor(header.blockCount) * (1 + header.targets.length));
}

/**
 * Encodes a slot into `into` when given (a buffer of slotSize bytes from an earlier encodeSlot of
 * the same header): a map commits every second while blocks arrive, and a fresh slot each time is
 * garbage that stays resident until V8's next full GC (4 MiB per commit for a 1 TiB image).
 */
export function encodeSlot(slot: MapSlot, into?: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(slot.header), 'utf8');
  if (JSON_OFFSET + json.length > HEADER_PAGE) throw new RangeError('map header too long');
  const size = slotSize(slot.header);
  if (into && into.length !== size) throw new RangeError(`slot buffer of ${into.length} bytes for a ${size}-byte slot`);
  const buffer = into ? into.fill(0, 0, HEADER_PAGE) : Buffer.alloc(size);
  MAP_MAGIC.copy(buffer, 0);
  buffer.writeUInt32LE(MAP_FORMAT_VERSION, 8);
  buffer.writeUInt32LE(json.length, 12);
  buffer.writeBigUInt64LE(slot.generation, 16);
  json.copy(buffer, JSON_OFFSET);
  const bitsetBytes = Bitset.bytesFor(slot.header.blockCount);
  let offset = HEADER_PAGE;
  for (const bits of [slot.present, ...slot.modified]) {
    buffer.set(bits.bytes, offset);
    offset += bitsetBytes;
  }
  checksum(buffer).copy(buffer, CHECKSUM_OFFSET);
  return buffer;
}

function checksum(slotBytes: Buffer): Buffer {
  return createHash('sha256').update(slotBytes.subarray(CHECKSUM_OFFSET + 32)).digest();
}

/** A new map's second slot: not damage (a new map has one committed slot until its next commit). */
export const NEVER_WRITTEN = 'never written';

/** Decodes a slot, or says why it is not valid (torn, never written, foreign). */
export function decodeSlot(bytes: Buffer): MapSlot | string {
  if (bytes.length < HEADER_PAGE) return 'short';
  if (bytes.subarray(0, HEADER_PAGE).every((byte) => byte === 0)) return NEVER_WRITTEN;
  if (!bytes.subarray(0, 8).equals(MAP_MAGIC)) return 'no map magic';
  const format = bytes.readUInt32LE(8);
  if (format !== MAP_FORMAT_VERSION) return `format ${format} not supported`;
  const jsonLength = bytes.readUInt32LE(12);
  if (JSON_OFFSET + jsonLength > HEADER_PAGE) return 'bad header length';
  let header: MapHeader;
  try {
    header = JSON.parse(bytes.subarray(JSON_OFFSET, JSON_OFFSET + jsonLength).toString('utf8')) as MapHeader;
  } catch {
    return 'header is not JSON';
  }
  if (!wellFormed(header)) return 'bad header';
  const size = slotSize(header);
  if (bytes.length < size) return 'short';
  const slotBytes = bytes.subarray(0, size);
  if (!checksum(slotBytes).equals(slotBytes.subarray(CHECKSUM_OFFSET, CHECKSUM_OFFSET + 32))) return 'checksum mismatch';
  const bitsetBytes = Bitset.bytesFor(header.blockCount);
  const bitsetAt = (i: number) => new Bitset(header.blockCount,
    new Uint8Array(slotBytes.subarray(HEADER_PAGE + i * bitsetBytes, HEADER_PAGE + (i + 1) * bitsetBytes)));
  return {
    header,
    generation: slotBytes.readBigUInt64LE(16),
    present: bitsetAt(0),
    modified: header.targets.map((_, i) => bitsetAt(i + 1)),
  };
}

/** A checksummed header is still checked: its numbers decide which bits exist and where. */
function wellFormed(header: MapHeader): boolean {
  if (typeof header !== 'object' || header === null) return false;
  const { size, blockSize, blockCount, targets, disk } = header;
  return typeof header.image === 'string' && typeof header.manifestDigest === 'string'
    && Number.isSafeInteger(size) && size >= 0 && Number.isSafeInteger(blockSize) && blockSize > 0
    && blockCount === Math.ceil(size / blockSize)
    && Array.isArray(targets) && targets.length >= 1 && targets.length <= MAX_TARGETS
    && (disk === undefined || (typeof disk === 'object' && disk !== null && typeof disk.identity === 'string'));
}
