// After a pivot QEMU was the disk's only writer, so the map (closed in read-through, unchanged since
// the pivot) no longer tells the whole truth. Once QEMU has exited, this folds what QEMU knows into
// the map, so that the next boot of the disk neither fetches over the guest's writes nor loses them:
//   R: every cluster allocated in the qcow2 metadata file (QEMU's copy-on-read, the stream, guest writes);
//   W: every block in the persistent writes bitmap (guest writes after the pivot; QEMU's own
//      copy-on-read and stream writes do not mark it), read through qemu-nbd. A bitmap that cannot
//      be read (QEMU killed: it reloads `inconsistent`) is never guessed from: W is rebuilt by
//      hashing each block QEMU allocated against the manifest's digest.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { dir } from 'tmp-promise';
import { BlockMap } from '../map/block-map.js';
import { lockDisk, type DiskLock } from '../cor/disk-lock.js';
import { mapPathOf } from '../cor/device.js';
import { digestOf, isZeroDigest, type Manifest } from '../repo/manifest-format.js';
import { WRITES_BITMAP } from '../../vmm/native-graph.js';
import { blocksOf, dirtyRangesOverNbd, qemuImgMap, type MapEntry } from './dirty-bitmap-extents.js';

export interface FoldResult {
  /** Blocks allocated in the qcow2 that the map did not have present. */
  readonly newlyPresent: number;
  /** Blocks the guest wrote after the pivot (W set). */
  readonly written: number;
  /** Where W came from. */
  readonly writesFrom: 'bitmap' | 'digests';
  /** The map after the fold. */
  readonly presentBlocks: number;
  readonly modifiedBlocks: number;
}

/** The writes bitmap's dirty ranges, or undefined if unreadable (QEMU was killed: it reloads inconsistent). */
async function dirtyRanges(metadataPath: string): Promise<MapEntry[] | undefined> {
  const scratch = await dir({ unsafeCleanup: true, prefix: 'lazyboot-fold-', tmpdir: tmpdir() });
  const socket = path.join(scratch.path, 'nbd.sock');
  const server = execa('qemu-nbd', ['--read-only', '--persistent', '-B', WRITES_BITMAP, '-f', 'qcow2', '-k', socket, metadataPath], { reject: false, stdin: 'ignore', detached: true });
  try {
    for (let tries = 0; tries < 100; tries++) {
      if (server.exitCode !== null && server.exitCode !== undefined) return undefined;
      try {
        return await dirtyRangesOverNbd(socket, '', WRITES_BITMAP);
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    return undefined;
  } finally {
    server.kill('SIGTERM');
    await server;
    await scratch.cleanup();
  }
}

/** Folds QEMU's allocation and the writes bitmap into the disk's map. QEMU must have exited. */
export async function foldNativeIntoMap(options: { disk: string; metadataPath: string; manifest: Manifest; heldLock?: DiskLock }): Promise<FoldResult> {
  const { disk, metadataPath, manifest } = options;
  // The caller may hold the disk's lock already (taken when the COR device closed after the fill).
  const lock = options.heldLock ?? (await lockDisk(disk));
  try {
    const handle = await open(disk, 'r');
    try {
      const map = await BlockMap.open(mapPathOf(disk), () => handle.datasync(), { image: `${manifest.name}@${manifest.version}`, blockSize: manifest.blockSize, blockCount: manifest.blockCount });
      try {
        const allocation = await qemuImgMap(['-f', 'qcow2', metadataPath]);
        let newlyPresent = 0;
        const allocated: number[] = [];
        for (const [first, last] of blocksOf(allocation, manifest.blockSize, (entry) => entry.present && entry.depth === 0)) {
          for (let block = first; block <= last; block++) {
            allocated.push(block);
            if (!map.isPresent(block)) newlyPresent++;
          }
          map.markPresent(first, last - first + 1);
        }
        let written = 0;
        const dirty = await dirtyRanges(metadataPath);
        if (dirty) {
          for (const [first, last] of blocksOf(dirty, manifest.blockSize, () => true)) {
            map.markModified(first, last - first + 1);
            written += last - first + 1;
          }
        } else {
          // No trustworthy bitmap (QEMU was killed). A block QEMU allocated that differs from the
          // image was written. QEMU may also have written data whose L2 entry never reached the
          // metadata file: on a disk created sparse with its map, every data extent of the raw
          // file at an absent block was written after the pivot (the COR device marks what it
          // stores), so those are hashed too: equal → present, different → present and W.
          const candidates = new Set(allocated);
          if (map.header.diskCreatedSparse) {
            const rawExtents = await qemuImgMap(['-f', 'raw', disk]);
            for (const [first, last] of blocksOf(rawExtents, manifest.blockSize, (entry) => entry.data)) {
              for (let block = first; block <= last; block++) if (!map.isPresent(block)) candidates.add(block);
            }
          }
          const buffer = Buffer.alloc(manifest.blockSize);
          for (const block of [...candidates].sort((a, b) => a - b)) {
            const length = Math.min(manifest.blockSize, manifest.size - block * manifest.blockSize);
            const { bytesRead } = await handle.read(buffer, 0, length, block * manifest.blockSize);
            const data = buffer.subarray(0, bytesRead);
            const expected = digestOf(manifest, block);
            const same = isZeroDigest(expected) ? data.every((byte) => byte === 0) : createHash('sha256').update(data).digest().equals(expected);
            if (!map.isPresent(block)) {
              map.markPresent(block, 1);
              newlyPresent++;
            }
            if (!same) {
              map.markModified(block, 1);
              written++;
            }
          }
        }
        await map.commit();
        const counts = map.counts();
        return { newlyPresent, written, writesFrom: dirty ? 'bitmap' : 'digests', presentBlocks: counts.present, modifiedBlocks: Math.max(0, ...counts.modified) };
      } finally {
        await map.close();
      }
    } finally {
      await handle.close();
    }
  } finally {
    await lock.release();
  }
}
