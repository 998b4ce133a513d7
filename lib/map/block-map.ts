// The block map `<disk>.map`: per block an R bit (present locally) and W bits (modified since last
// shipped, one bitset per replication target), kept in memory and committed durably in batches.
//
// Over 300 lines on purpose: the five rules, the two-slot commit that keeps them and the bits they
// govern stay in one file, so a reader checks a rule against its code without leaving it.
//
// DURABILITY RULES (this file and lib/cor/ enforce them together: rule 2 in guest-writes.ts, rule 3 in cor-backend.ts):
//  1. R is set on disk only after the block's data is durable. A commit snapshots the bits, then
//     runs `syncData` (fdatasync of the local disk), then writes the snapshot: every R bit in it was
//     set in memory after its data write returned, hence before that fdatasync.
//  2. W is a write-intent bit: the COR device sets it and awaits `commit()` BEFORE issuing the
//     guest's data write, so a crash never leaves modified data that the map calls unmodified.
//  3. A guest FLUSH is acknowledged only after `commit()` resolved: data and map both durable.
//  4. Updates are batched: the read path only sets bits in memory; commits happen on flush, on a
//     W-intent, on a timer and on close, and concurrent callers share one commit (group commit).
//  5. Torn writes: the map has two slots written alternately, each with a SHA-256 over its content
//     and a generation number. Recovery takes the valid slot with the highest generation. The other
//     slot is an older complete state, in which R bits are a subset (R only ever goes 0 → 1, so a
//     block in doubt reads as absent and is fetched again) and W bits that mattered are already
//     there (rule 2: a W-intent commit completed before its data write was issued).
//  6. A disk fingerprint in the header certifies the bits it was committed with: the first change
//     of any bit drops it, and the drop is committed in the same slot as the change (for a W,
//     before the data write, rule 2). See DiskBinding in map-format.ts.
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Bitset } from './bitset.js';
import { MapCorrupt, MapMismatch, MapTargetsFull } from './errors.js';
import { decodeSlot, encodeSlot, MAX_TARGETS, NEVER_WRITTEN, slotSize, type DiskBinding, type MapHeader, type MapSlot, type TargetShipping } from './map-format.js';

export type { DiskBinding, DiskFingerprint, MapHeader, TargetShipping } from './map-format.js';

/** The map and the local disk are the guest's data: owner only, whatever the umask. */
const FILE_MODE = 0o600;

export interface MapCounts {
  readonly present: number;
  /** Per target, in header order. */
  readonly modified: number[];
  readonly total: number;
}

export class BlockMap {
  private generation: bigint;
  private commitInFlight: Promise<void> | undefined;
  private commitQueued: Promise<void> | undefined;
  private changedSinceCommit = false;
  private closed = false;
  /** Reused by every commit (commits never overlap: see commit()). */
  private slotBuffer: Buffer | undefined;

  private constructor(
    readonly path: string,
    private file: FileHandle,
    private currentHeader: MapHeader,
    readonly present: Bitset,
    readonly modified: Bitset[],
    generation: bigint,
    /** Makes the local disk's data durable; run before every map write (rule 1). */
    private readonly syncData: () => Promise<void>,
    /** Which slot recovery used and why the other was refused, for the log. */
    readonly recovery: string,
    /** The newest slot was refused (a torn or damaged write): worth a log line. */
    readonly recovered = false,
  ) {
    this.generation = generation;
  }

  /**
   * Creates a new map (all absent, nothing modified) and makes it durable before returning. It is
   * written beside `path` and renamed into place, so a crash leaves a whole map or none (never
   * one a later open calls corrupt). The caller holds the disk lock: nothing else creates it.
   */
  static async create(path: string, header: MapHeader, syncData: () => Promise<void>): Promise<BlockMap> {
    validateHeader(header);
    const temporary = `${path}.new`;
    await unlink(temporary).catch(() => undefined); // left by a crash during an earlier create
    const file = await open(temporary, 'wx+', FILE_MODE);
    try {
      const map = new BlockMap(path, file, header, new Bitset(header.blockCount),
        header.targets.map(() => new Bitset(header.blockCount)), 0n, syncData, 'created');
      await file.truncate(slotSize(header) * 2);
      map.changedSinceCommit = true;
      await map.commit();
      await rename(temporary, path);
      await syncDirectory(dirname(path));
      return map;
    } catch (error) {
      await file.close();
      await unlink(temporary).catch(() => undefined);
      throw error;
    }
  }

  /** Opens an existing map, recovering from a torn write; refuses a map of another image/block size. */
  static async open(path: string, syncData: () => Promise<void>, expected?: Pick<MapHeader, 'image' | 'blockSize' | 'blockCount'>): Promise<BlockMap> {
    const file = await open(path, 'r+');
    try {
      const { size } = await file.stat();
      const bytes = Buffer.alloc(size);
      await file.read(bytes, 0, size, 0);
      const first = decodeSlot(bytes);
      const secondAt = typeof first === 'string' ? undefined : slotSize(first.header);
      let second: MapSlot | string = 'not reached';
      if (secondAt !== undefined) second = decodeSlot(bytes.subarray(secondAt));
      else second = scanForSecondSlot(bytes);
      const valid = [first, second].filter((s): s is MapSlot => typeof s !== 'string');
      if (valid.length === 0) throw new MapCorrupt(path, `slot A: ${first as string}; slot B: ${second as string}`);
      valid.sort((a, b) => (a.generation > b.generation ? -1 : 1));
      const chosen = valid[0]!;
      if (expected) checkExpected(path, chosen.header, expected);
      const refused = typeof first === 'string' ? first : typeof second === 'string' ? second : undefined;
      const recovered = refused !== undefined && refused !== NEVER_WRITTEN;
      const recovery = recovered ? `generation ${chosen.generation}; other slot refused: ${refused}` : `generation ${chosen.generation}`;
      return new BlockMap(path, file, chosen.header, chosen.present, chosen.modified, chosen.generation, syncData, recovery, recovered);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  get header(): MapHeader {
    return this.currentHeader;
  }

  /**
   * Records the disk this map describes, with a fingerprint of its present blocks taken now (see
   * DiskBinding): call when nothing changes the disk, e.g. on close. Committed at the next commit.
   */
  bindDisk(binding: DiskBinding, options: { trustSparse?: boolean } = {}): void {
    this.currentHeader = {
      ...this.currentHeader,
      disk: binding,
      diskCreatedSparse: options.trustSparse === false ? false : this.currentHeader.diskCreatedSparse,
    };
    this.changedSinceCommit = true;
  }

  /** Rule 6: the fingerprint certifies the bits as they were; any change voids it. */
  private voidFingerprint(): boolean {
    const disk = this.currentHeader.disk;
    if (!disk?.fingerprint) return false;
    this.currentHeader = { ...this.currentHeader, disk: { identity: disk.identity } };
    return true;
  }

  get blockCount(): number {
    return this.header.blockCount;
  }

  isPresent(index: number): boolean {
    return this.present.get(index);
  }

  /** Modified for any target (or for `target` when given). */
  isModified(index: number, target?: number): boolean {
    if (target !== undefined) return this.modified[target]!.get(index);
    return this.modified.some((bits) => bits.get(index));
  }

  /** Rule 1: call only after the blocks' data writes returned. Durable at the next commit. */
  markPresent(first: number, count: number): void {
    this.present.setRange(first, count);
    this.voidFingerprint();
    this.changedSinceCommit = true;
  }

  /** Sets W for every target (a guest write). Rule 2: await commit() before writing the data. */
  markModified(first: number, count: number): boolean {
    // A W-intent voids the fingerprint even if its bits are set already: the data changes.
    let changed = this.voidFingerprint();
    for (const bits of this.modified) {
      for (let i = first; i < first + count; i++) {
        if (!bits.get(i)) { bits.set(i); changed = true; }
      }
    }
    if (changed) this.changedSinceCommit = true;
    return changed;
  }

  /**
   * For the replicator: only after the target acknowledged the blocks durably. Afterwards a present
   * block may differ from this map's manifest with W clear, so "W clear" means "shipped", not
   * "equals the image"; only an ABSENT block with W clear is known to hold no guest data.
   */
  clearModified(target: number, first: number, count: number): void {
    this.modified[target]!.clearRange(first, count);
    this.voidFingerprint();
    this.changedSinceCommit = true;
  }

  /** Index of a target label in the header, or -1. */
  targetIndex(label: string): number {
    return this.currentHeader.targets.indexOf(label);
  }

  /**
   * For a snapshot: clears the target's W bits that are set in `shipping` (which the caller has
   * made durable elsewhere first, see lib/snapshot/sending-set.ts). Durable at the next commit.
   */
  clearModifiedWhere(target: number, shipping: Bitset): void {
    this.modified[target]!.clearWhere(shipping);
    this.voidFingerprint();
    this.changedSinceCommit = true;
  }

  /** Sets the target's W bits again for blocks a failed snapshot did not ship. */
  remarkModified(target: number, blocks: Bitset): void {
    this.modified[target]!.orWith(blocks);
    this.voidFingerprint();
    this.changedSinceCommit = true;
  }

  /** The target's shipping state (durable at the next commit; W bits unchanged). */
  setShipping(target: string, shipping: TargetShipping): void {
    if (!this.currentHeader.targets.includes(target)) throw new RangeError(`map ${this.path} has no target ${target}`);
    this.currentHeader = { ...this.currentHeader, shipping: { ...this.currentHeader.shipping, [target]: shipping } };
    this.changedSinceCommit = true;
  }

  shippingOf(target: string): TargetShipping | undefined {
    return this.currentHeader.shipping?.[target];
  }

  /**
   * Adds a replication target with its own W bits, starting as `initial`. The slot size changes,
   * so the whole map is rewritten beside the file and renamed over it (a crash leaves the old map
   * or the new one, whole). Only while nothing else uses the map (the caller holds the disk lock
   * and has no device open on it). Returns the new target's index.
   */
  async addTarget(label: string, initial: Bitset, shipping: TargetShipping): Promise<number> {
    const targets = this.currentHeader.targets;
    if (targets.includes(label)) throw new RangeError(`map ${this.path} has a target ${label} already`);
    if (targets.length >= MAX_TARGETS) throw new MapTargetsFull(this.path, targets);
    while (this.commitInFlight || this.commitQueued) await (this.commitQueued ?? this.commitInFlight)!.catch(() => undefined);
    const header: MapHeader = { ...this.currentHeader, targets: [...targets, label], shipping: { ...this.currentHeader.shipping, [label]: shipping } };
    const bits = new Bitset(this.blockCount);
    bits.words.set(initial.words);
    const modified = [...this.modified, bits];
    const generation = this.generation + 1n;
    const slot = encodeSlot({ header, generation, present: this.present, modified });
    await this.syncData();
    const temporary = `${this.path}.new`;
    await unlink(temporary).catch(() => undefined);
    const file = await open(temporary, 'wx+', FILE_MODE);
    try {
      await file.truncate(slot.length * 2);
      await file.write(slot, 0, slot.length, Number(generation % 2n) * slot.length);
      await file.datasync();
      await rename(temporary, this.path);
      await syncDirectory(dirname(this.path));
    } catch (error) {
      await file.close();
      await unlink(temporary).catch(() => undefined);
      throw error;
    }
    await this.file.close();
    this.file = file;
    this.currentHeader = header;
    this.modified.push(bits);
    this.generation = generation;
    this.slotBuffer = undefined;
    return header.targets.length - 1;
  }

  nextAbsent(from: number): number {
    return this.present.nextClear(from);
  }

  nextModified(from: number, target = 0): number {
    return this.modified[target]!.nextSet(from);
  }

  counts(): MapCounts {
    return {
      present: this.present.count(),
      modified: this.modified.map((bits) => bits.count()),
      total: this.header.blockCount,
    };
  }

  get hasUncommittedChanges(): boolean {
    return this.changedSinceCommit;
  }

  /**
   * Makes the current in-memory state durable (data first, then map). Concurrent callers share
   * commits: a caller arriving while a commit runs waits for the next one, which covers its bits.
   */
  commit(): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`map ${this.path} is closed`));
    if (this.commitQueued) return this.commitQueued;
    if (!this.commitInFlight) {
      this.commitInFlight = this.writeSlot().finally(() => { this.commitInFlight = undefined; });
      return this.commitInFlight;
    }
    const queued = this.commitInFlight.catch(() => undefined).then(() => {
      this.commitQueued = undefined;
      this.commitInFlight = this.writeSlot().finally(() => { this.commitInFlight = undefined; });
      return this.commitInFlight;
    });
    this.commitQueued = queued;
    return queued;
  }

  /** Commits what is pending and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      while (this.commitInFlight || this.commitQueued) await (this.commitQueued ?? this.commitInFlight);
      if (this.changedSinceCommit) await this.commit();
    } finally {
      this.closed = true;
      await this.file.close();
    }
  }

  /** Always syncs the data (a FLUSH needs that even when no bit changed); writes a slot if bits changed. */
  private async writeSlot(): Promise<void> {
    if (!this.changedSinceCommit && this.generation > 0n) {
      await this.syncData();
      return;
    }
    // Snapshot first: bits set after this point wait for the next commit (rule 1).
    this.changedSinceCommit = false;
    const generation = this.generation + 1n;
    const slot = encodeSlot({ header: this.currentHeader, generation, present: this.present, modified: this.modified }, this.slotBuffer);
    this.slotBuffer = slot;
    try {
      await this.syncData();
      const at = Number(generation % 2n) * slot.length;
      await this.file.write(slot, 0, slot.length, at);
      await this.file.datasync();
      this.generation = generation;
    } catch (error) {
      this.changedSinceCommit = true;
      throw error;
    }
  }
}

async function syncDirectory(path: string): Promise<void> {
  const directory = await open(path, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/** Slot A is unreadable: try slot B at each slot size the file length allows. */
function scanForSecondSlot(bytes: Buffer): MapSlot | string {
  const half = bytes.length / 2;
  if (!Number.isInteger(half) || half === 0) return 'map length is not two slots';
  return decodeSlot(bytes.subarray(half));
}

function validateHeader(header: MapHeader): void {
  if (header.targets.length < 1 || header.targets.length > MAX_TARGETS) {
    throw new RangeError(`a map needs 1..${MAX_TARGETS} replication targets, got ${header.targets.length}`);
  }
  if (header.blockCount !== Math.ceil(header.size / header.blockSize)) throw new RangeError('blockCount does not match size / blockSize');
}

function checkExpected(path: string, found: MapHeader, expected: Pick<MapHeader, 'image' | 'blockSize' | 'blockCount'>): void {
  if (found.image !== expected.image) throw new MapMismatch(path, 'image', expected.image, found.image);
  if (found.blockSize !== expected.blockSize) throw new MapMismatch(path, 'block size', String(expected.blockSize), String(found.blockSize));
  if (found.blockCount !== expected.blockCount) throw new MapMismatch(path, 'block count', String(expected.blockCount), String(found.blockCount));
}
