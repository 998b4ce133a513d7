// Binds a map to its local disk, so that a map that outlived its disk never makes a new or
// another file's bytes pass for the image's (the map's R bits say "this block is here").
//
// A raw disk must stay a valid raw image, so no identity can be stored in it. The map records:
//  - the disk's identity (inode + birth time, or device number: LocalDisk.identity), which
//    survives renames and reopen after a crash, but not a copy;
//  - at clean close, a fingerprint: SHA-256 over a sample of present blocks that hold data
//    (modified ones first, then image data blocks spread over the disk, then a few zero blocks).
//    Data blocks matter: a new sparse file agrees with every zero block. The map drops the
//    fingerprint at the first change of any bit (BlockMap rule 6), so a fingerprint found on open
//    was taken with exactly these bits.
// On open: a fingerprint, when there is one, must match the disk (this catches a file replaced in
// place and filesystems without birth times); an identity that differs is accepted only with a
// matching fingerprint (a disk copied or moved with its map after a clean stop, e.g. `cp
// --sparse=always` of both files, or a block device renumbered after a reboot) and is then
// recorded. Anything else is refused with one line saying how to start over: refusing is the safe
// default, since resetting the map would silently drop the W bits of writes not yet shipped.
// Not caught: a copy of another disk of the same image that agrees on every sampled block.
// Certifying assumes lazyboot is the disk's only writer until the map is closed: a pivot that
// hands the disk to QEMU while this map stays open must not certify at close.
import { createHash } from 'node:crypto';
import type { BlockMap, DiskFingerprint } from '../map/block-map.js';
import type { LocalDisk } from './local-disk.js';
import { digestOf, isZeroDigest, type Manifest } from '../repo/manifest-format.js';
import { DiskNotBound } from './errors.js';

/** Blocks read for a fingerprint: a few MiB at most, at close and at open. */
const SAMPLED_MODIFIED = 8;
const SAMPLED_DATA = 24;
const SAMPLED_ZERO = 4;

/** Checks (on open) that `map` describes `disk`; records the disk's identity when it moved. */
export async function checkDiskBinding(map: BlockMap, disk: LocalDisk, log: (line: string) => void): Promise<void> {
  const binding = map.header.disk;
  if (!binding) throw new DiskNotBound(disk.path, 'the map was made by an older lazyboot that did not record its disk');
  const identity = await disk.identity();
  const fingerprintMatches = binding.fingerprint ? await matches(binding.fingerprint, map, disk) : undefined;
  if (fingerprintMatches === false) {
    throw new DiskNotBound(disk.path, `the disk's content differs from what the map recorded at its last stop (${describe(binding.identity, identity)})`);
  }
  if (binding.identity === identity) return;
  if (fingerprintMatches === undefined) {
    throw new DiskNotBound(disk.path, `the disk is another file (${describe(binding.identity, identity)}) and the map, not stopped cleanly, cannot check its content`);
  }
  log(`${disk.path} was moved or copied with its map (its sampled blocks match): binding the map to it`);
  // Absent blocks of the copy are not known to be holes: look before trusting them as zeros.
  map.bindDisk({ identity }, { trustSparse: false });
  await map.commit();
}

/** Records the disk's identity and a fingerprint of its present blocks (on clean close). */
export async function certifyDisk(map: BlockMap, disk: LocalDisk, manifest: Manifest): Promise<void> {
  const blocks = sampleBlocks(map, (b) => !isZeroDigest(digestOf(manifest, b)));
  map.bindDisk({ identity: await disk.identity(), fingerprint: { blocks, sha256: await digest(blocks, map, disk) } });
}

function describe(recorded: string, found: string): string {
  return recorded === found ? `same file: ${found}` : `recorded ${recorded}, found ${found}`;
}

async function matches(fingerprint: DiskFingerprint, map: BlockMap, disk: LocalDisk): Promise<boolean> {
  if (fingerprint.blocks.some((block) => !Number.isInteger(block) || block < 0 || block >= map.blockCount || !map.isPresent(block))) return false;
  return (await digest(fingerprint.blocks, map, disk)) === fingerprint.sha256;
}

/** Present blocks: modified ones, then image data blocks and zero blocks, each spread over the disk. */
function sampleBlocks(map: BlockMap, isImageData: (block: number) => boolean): number[] {
  const chosen = new Set<number>();
  for (let b = map.nextModified(0); b >= 0 && chosen.size < SAMPLED_MODIFIED; b = map.nextModified(b + 1)) {
    if (map.isPresent(b)) chosen.add(b);
  }
  spread(map, SAMPLED_DATA, isImageData, chosen);
  spread(map, SAMPLED_ZERO, (b) => !isImageData(b), chosen);
  return [...chosen].sort((a, b) => a - b);
}

/** The first present block of each of `count` equal parts of the disk that passes `wanted`. */
function spread(map: BlockMap, count: number, wanted: (block: number) => boolean, into: Set<number>): void {
  for (let part = 0; part < count; part++) {
    const end = Math.floor(((part + 1) * map.blockCount) / count);
    for (let b = map.present.nextSet(Math.floor((part * map.blockCount) / count)); b >= 0 && b < end; b = map.present.nextSet(b + 1)) {
      if (wanted(b)) { into.add(b); break; }
    }
  }
}

async function digest(blocks: readonly number[], map: BlockMap, disk: LocalDisk): Promise<string> {
  const { blockSize, size } = map.header;
  const hash = createHash('sha256');
  for (const block of blocks) {
    const offset = block * blockSize;
    const index = Buffer.alloc(8);
    index.writeBigUInt64LE(BigInt(block));
    hash.update(index).update(await disk.read(offset, Math.min(blockSize, size - offset)));
  }
  return hash.digest('hex');
}
