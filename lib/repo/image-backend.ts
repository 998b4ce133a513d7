// A read-only BlockBackend over one image version: blocks come from the pack store, zero blocks
// are synthesised and reported as holes. Blocks of a read that lie together in a pack are read
// with one request, shaped by the storage (storage.ts ReadShape): a local file gets one pread per
// run contiguous in pack and read (512 KiB at most); an object store one range GET of up to 4 MiB
// for blocks near each other in a pack, wherever they go in the read.
import { createHash } from 'node:crypto';
import { BlockError, MAX_REQUEST_BYTES, type BlockCapabilities, type BlockSizeConstraints, type Extent } from '../block/backend.js';
import { readByFilling, zeroBlockRanges, type KnowsZeroRanges, type ReadsIntoBuffer } from '../block/read-into.js';
import { READ_ONLY_CAPABILITIES, ReadOnlyBackend } from '../block/read-only.js';
import { DIGEST_BYTES, zeroBlockFlags, type Manifest } from './manifest-format.js';
import { BlockCorrupt, BlockMissing, RepositoryCorrupt, StoreUnavailable } from './errors.js';
import type { BlockLocation, PackFile, PackStore } from './pack-store.js';
import { formatImageRef } from './image-name.js';
import { exactInteger } from './exact-integer.js';

export interface ImageBackendOptions {
  /** Hash every block read and fail on a mismatch (costs CPU; the fetcher verifies anyway). */
  readonly verify?: boolean;
  /**
   * Hash each stored block the first time it is read, and remember that it matched (one bit per
   * block in its pack), so that a damaged block is an error and not silently served, while
   * re-reads cost a bit test. What `repo serve` uses: plain NBD clients cannot verify.
   */
  readonly verifyOnce?: boolean;
}

/** A block read whose first verification is still to do. */
interface Unverified {
  readonly index: number;
  readonly location: BlockLocation;
}

/**
 * Bound on the work one blockStatus call does. 256 runs of an image whose zero blocks alternate
 * with data cover ~32 MiB: enough for the one coalesced extent a REQ_ONE client gets (below).
 */
const MAX_EXTENTS_PER_CALL = 256;
/**
 * Clients that ask one extent per round trip (QEMU) get zero runs shorter than this reported inside
 * the data around them (lib/nbd/block-status.ts coalesceOne): reading 1 MiB of zeros, which travel
 * as a hole chunk, costs less than the two round trips that skipping it takes.
 */
const COALESCE_STATUS_BELOW_BYTES = 1024 * 1024;

/** Read-only, and block status knows the image's zero blocks. */
const IMAGE_CAPABILITIES: BlockCapabilities = { ...READ_ONLY_CAPABILITIES, extents: true };

/** Where bytes of a run go in the read: `length` bytes at `at` in the run, to `targetOffset`. */
interface RunPiece {
  readonly at: number;
  readonly targetOffset: number;
  length: number;
}

/** One read of a pack's bytes [filePosition, filePosition + length), covering its pieces. */
interface ReadRun {
  readonly pack: PackFile;
  readonly filePosition: number;
  length: number;
  readonly pieces: RunPiece[];
}

export class ImageBackend extends ReadOnlyBackend implements ReadsIntoBuffer, KnowsZeroRanges {
  readonly size: number;
  override readonly capabilities = IMAGE_CAPABILITIES;
  readonly coalesceStatusBelowBytes = COALESCE_STATUS_BELOW_BYTES;
  protected override readonly refusal = 'repository images are read-only';
  readonly constraints: BlockSizeConstraints;
  private readonly zeroFlags: Uint8Array;
  /** Where each block is stored, filled on first use (saves a digest lookup per block read). */
  private readonly locations: Array<BlockLocation | undefined>;
  /** First block of each run of blocks that are all zero or all data. */
  private readonly runStarts: Uint32Array;

  constructor(
    readonly manifest: Manifest,
    private readonly store: PackStore,
    private readonly options: ImageBackendOptions = {},
  ) {
    super();
    this.size = manifest.size;
    this.constraints = { minimum: 1, preferred: Math.min(manifest.blockSize, 64 * 1024), maximum: MAX_REQUEST_BYTES };
    // One byte per block, so block status and reads need not compare digests.
    this.zeroFlags = zeroBlockFlags(manifest);
    this.locations = new Array<BlockLocation | undefined>(manifest.blockCount);
    const starts: number[] = [];
    for (let i = 0; i < manifest.blockCount; i++) if (i === 0 || this.zeroFlags[i] !== this.zeroFlags[i - 1]) starts.push(i);
    this.runStarts = Uint32Array.from(starts);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return readByFilling(this, offset, length);
  }

  async readInto(offset: number, out: Buffer): Promise<void> {
    const length = out.length;
    this.checkRange(offset, length);
    const { blockSize } = this.manifest;
    const end = offset + length;
    const runs: ReadRun[] = [];
    const unverified: Unverified[] = [];
    /** Each pack's latest run: a block may join it past pieces of other packs (a version's changed blocks). */
    const latest = new Map<PackFile, ReadRun>();
    for (let index = Math.floor(offset / blockSize); index * blockSize < end; index++) {
      const blockStart = index * blockSize;
      const from = Math.max(offset, blockStart);
      const to = Math.min(end, blockStart + blockSize, this.size);
      const targetOffset = from - offset;
      if (this.zeroFlags[index]) {
        out.fill(0, targetOffset, targetOffset + (to - from));
        continue;
      }
      const location = this.locateKnown(index) ?? (await this.locateAfterRefresh(index));
      if (this.options.verifyOnce && !location.pack.isVerified(location.entry)) unverified.push({ index, location });
      const filePosition = location.offset + (from - blockStart);
      const run = latest.get(location.pack);
      if (!run || !this.extend(run, filePosition, targetOffset, to - from)) {
        const started: ReadRun = { pack: location.pack, filePosition, length: to - from, pieces: [{ at: 0, targetOffset, length: to - from }] };
        latest.set(location.pack, started);
        runs.push(started);
      }
    }
    try {
      if (runs.length === 1) await readRun(runs[0]!, out);
      else await Promise.all(runs.map((r) => readRun(r, out)));
      if (this.options.verify) this.verifyBlocks(out, offset, length);
      if (unverified.length > 0) await this.verifyFirstReads(unverified, out, offset);
    } catch (error) {
      throw toBlockError(error);
    }
  }

  /**
   * Adds the piece [filePosition, +length) of the run's pack, going to `targetOffset`, to `run` if
   * the storage's read shape lets one request cover both; false if it needs a run of its own.
   */
  private extend(run: ReadRun, filePosition: number, targetOffset: number, length: number): boolean {
    const { maxRangeBytes, joinGapBytes } = this.store.storage.readShape;
    const gap = filePosition - (run.filePosition + run.length);
    const last = run.pieces[run.pieces.length - 1]!;
    const followsInRead = last.targetOffset + last.length === targetOffset;
    if (gap < 0) return false;
    if (joinGapBytes === undefined) {
      // One pread straight into place (a run may pass the limit by its last block, as it always has).
      if (gap > 0 || !followsInRead || run.length >= maxRangeBytes) return false;
    } else if (gap > joinGapBytes || filePosition + length - run.filePosition > maxRangeBytes) {
      return false;
    }
    const at = filePosition - run.filePosition;
    if (gap === 0 && followsInRead) last.length += length;
    else run.pieces.push({ at, targetOffset, length });
    run.length = at + length;
    return true;
  }

  /** Zero blocks are not stored: a server sends them as holes instead of zeros. */
  knownZeroRanges(offset: number, length: number): Array<readonly [number, number]> {
    return zeroBlockRanges(offset, length, this.manifest.blockSize, this.size, (block) => this.zeroFlags[block] === 1);
  }

  private digestAt(index: number): Buffer {
    return this.manifest.digests.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
  }

  /** The block's location from the loaded indexes (no I/O), checked against its expected length. */
  private locateKnown(index: number): BlockLocation | undefined {
    const cached = this.locations[index];
    if (cached) return cached;
    const location = this.store.locate(this.digestAt(index));
    return location && (this.locations[index] = this.checkedLocation(index, location));
  }

  /** On a miss: another writer may have added packs since we loaded the indexes. */
  private async locateAfterRefresh(index: number): Promise<BlockLocation> {
    const digest = this.digestAt(index);
    let location: BlockLocation | undefined;
    try {
      location = await this.store.locateFresh(digest);
    } catch (error) {
      throw toBlockError(error);
    }
    if (!location) {
      const damaged = this.store.damage.size > 0 ? `; ${this.store.damage.size} pack index(es) could not be loaded, see \`lazyboot repo check\`` : '';
      throw toBlockError(new BlockMissing(digest.toString('hex'), `block ${index} of ${formatImageRef(this.manifest.name, this.manifest.version)}${damaged}`));
    }
    return (this.locations[index] = this.checkedLocation(index, location));
  }

  private checkedLocation(index: number, location: BlockLocation): BlockLocation {
    const expected = Math.min(this.manifest.blockSize, this.size - index * this.manifest.blockSize);
    if (location.length !== expected) {
      throw toBlockError(new RepositoryCorrupt(location.pack.path, `holds block ${this.digestAt(index).toString('hex')} with ${location.length} bytes where ${expected} are expected`));
    }
    return location;
  }

  /**
   * Hashes blocks read for the first time: from `out` when the read covered the whole block, else
   * from a read of the whole block (once per block per server process).
   */
  private async verifyFirstReads(blocks: readonly Unverified[], out: Buffer, offset: number): Promise<void> {
    const { blockSize } = this.manifest;
    for (const { index, location } of blocks) {
      const blockStart = index * blockSize;
      const inside = blockStart >= offset && blockStart + location.length <= offset + out.length;
      let data: Buffer;
      if (inside) {
        data = out.subarray(blockStart - offset, blockStart - offset + location.length);
      } else {
        data = Buffer.allocUnsafe(location.length);
        await location.pack.readInto(data, 0, location.length, location.offset);
      }
      const digest = this.digestAt(index);
      if (!createHash('sha256').update(data).digest().equals(digest)) {
        throw new BlockCorrupt(digest.toString('hex'), location.pack.path, location.offset);
      }
      location.pack.markVerified(location.entry);
    }
  }

  /** Verifies the whole blocks inside [offset, offset+length) (partial edge blocks are not checked). */
  private verifyBlocks(out: Buffer, offset: number, length: number): void {
    const { blockSize } = this.manifest;
    for (let index = Math.ceil(offset / blockSize); index * blockSize < offset + length; index++) {
      const blockStart = index * blockSize;
      const blockEnd = Math.min(blockStart + blockSize, this.size);
      if (blockEnd > offset + length || this.zeroFlags[index]) continue;
      const digest = this.manifest.digests.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
      const actual = createHash('sha256').update(out.subarray(blockStart - offset, blockEnd - offset)).digest();
      if (!actual.equals(digest)) {
        const location = this.store.locate(digest);
        throw new BlockCorrupt(digest.toString('hex'), location?.pack.path ?? '?', location?.offset ?? 0);
      }
    }
  }

  override async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.blockStatusNow(offset, length);
  }

  /** From the manifest's zero flags, in memory: see BlockBackend.blockStatusNow. */
  blockStatusNow(offset: number, length: number): Extent[] {
    this.checkRange(offset, length);
    const { blockSize } = this.manifest;
    const end = offset + length;
    const extents: Extent[] = [];
    // Clients (QEMU) often ask about the whole rest of the disk but use only the first extent:
    // walk precomputed runs, and stop after a few extents, as the interface allows.
    for (let run = this.runContaining(Math.floor(offset / blockSize)); run < this.runStarts.length; run++) {
      const from = Math.max(offset, this.runStarts[run]! * blockSize);
      if (from >= end || extents.length === MAX_EXTENTS_PER_CALL) break;
      const runEnd = run + 1 < this.runStarts.length ? this.runStarts[run + 1]! * blockSize : this.size;
      const zero = this.zeroFlags[this.runStarts[run]!] === 1;
      extents.push({ offset: from, length: Math.min(end, runEnd) - from, hole: zero, zero });
    }
    return extents;
  }

  /** Index of the run holding block `index` (binary search over run starts). */
  private runContaining(index: number): number {
    let low = 0;
    let high = this.runStarts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this.runStarts[middle]! <= index) low = middle;
      else high = middle - 1;
    }
    return low;
  }

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new BlockError('EINVAL', `range ${exactInteger(offset)}+${exactInteger(length)} is outside the image (${this.size} bytes)`);
    }
  }

  /** Nothing to release: pack handles belong to the repository. */
  async close(): Promise<void> {}
}

/** Reads one run: straight into `out` when it is one piece, else into a scratch buffer copied out piece by piece. */
async function readRun(run: ReadRun, out: Buffer): Promise<void> {
  const only = run.pieces.length === 1 ? run.pieces[0]! : undefined;
  if (only && only.length === run.length) {
    await run.pack.readInto(out, only.targetOffset, run.length, run.filePosition);
    return;
  }
  const scratch = Buffer.allocUnsafe(run.length);
  await run.pack.readInto(scratch, 0, run.length, run.filePosition);
  for (const piece of run.pieces) scratch.copy(out, piece.targetOffset, piece.at, piece.at + piece.length);
}

function toBlockError(error: unknown): BlockError {
  if (error instanceof BlockError) return error;
  // A store that is down says what to do about it (its hint); a damaged repository says what is wrong.
  const message = error instanceof StoreUnavailable ? error.toLine() : error instanceof Error ? error.message : String(error);
  return new BlockError('EIO', message, { cause: error });
}
