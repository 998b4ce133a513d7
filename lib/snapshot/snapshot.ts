// `snapshot()`: ships the blocks of a local disk whose W bit is set for one target to a repository
// and commits them as a new image version, through the repository's write path
// (lib/repo/write-target.ts). The steps, and what a crash at each leaves:
//   1. the target's W bits are copied to the durable in-flight set (sending-set.ts), then cleared
//      in the map: a crash leaves the set, which the next snapshot merges back;
//   2. per batch, the dirty blocks are read and hashed; their digests are offered and only the
//      blocks the repository lacks are sent (acknowledged once durable there);
//   3. the new version is committed (create-only, with this session's id: a retry after a crash
//      finds it); then the map records it as the target's baseline, and the set is removed.
// On any error or interruption the set is merged back into the W bits at once.
// Over 300 lines on purpose: the steps above, and what each leaves after a crash, read top to bottom here.
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { BlockMap } from '../map/block-map.js';
import type { Bitset } from '../map/bitset.js';
import { LocalDisk } from '../cor/local-disk.js';
import { lockDisk } from '../cor/disk-lock.js';
import { certifyDisk, checkDiskBinding } from '../cor/disk-binding.js';
import { mapPathOf } from '../cor/device.js';
import { decodeManifest } from '../repo/manifest-codec.js';
import { DIGEST_BYTES, ZERO_DIGEST, type Manifest } from '../repo/manifest-format.js';
import { validateImageName } from '../repo/image-name.js';
import type { WriteTarget } from '../repo/write-target.js';
import { canonicalWriteUri, openWriteTarget } from '../write/open-write-target.js';
import { readSendingSet, removeSendingSet, sendingSetPath, writeSendingSet, type SendingSet } from './sending-set.js';
import { bindTarget, sha256Hex } from './bind-target.js';
import { SendingSetCorrupt, SnapshotBaselineChanged, SnapshotInterrupted, SnapshotNeedsFullDisk, SnapshotNoMap } from './errors.js';
import { readAndHashBlocks, type BlockSource } from './block-runs.js';

export interface SnapshotOptions {
  /** The local disk (its map is `DISK.map`); no other process may be using it. */
  readonly disk: string;
  /** Repository directory, `http+unix:///?socket=PATH` or `http://HOST:PORT` (`repo serve --write-…`). */
  readonly to: string;
  /** Image name of the new version. */
  readonly as: string;
  /** The endpoint of an s3:// `to` (--s3-endpoint), over AWS_ENDPOINT_URL and the shared config. */
  readonly s3Endpoint?: string;
  /** Hash every local block, not only the marked ones (when the marks are in doubt); only what the repository lacks is sent. */
  readonly full?: boolean;
  /** Dirty data read, offered and sent per round trip (default 16 MiB). */
  readonly batchBytes?: number;
  /** After each batch; a returned promise holds the next batch until it settles. */
  readonly onProgress?: (progress: SnapshotProgress) => void | Promise<void>;
  readonly log?: (line: string) => void;
  /** Aborting stops between batches; the marks are put back and SnapshotInterrupted is thrown. */
  readonly signal?: AbortSignal;
}

export interface SnapshotProgress {
  readonly blockSize: number;
  readonly doneBlocks: number;
  readonly dirtyBlocks: number;
  readonly blockBytesSent: number;
}

export interface SnapshotResult {
  /** `NAME@N` committed (or found: see `existing`). */
  readonly ref: string;
  readonly parent?: string;
  /** The map's label for the target, and the target's URI as given. */
  readonly target: string;
  readonly uri: string;
  readonly blockSize: number;
  /** Blocks marked (W) for the target: the work of this snapshot. */
  readonly dirtyBlocks: number;
  /** Blocks whose data was sent. */
  readonly sentBlocks: number;
  /** Dirty blocks whose content the repository had already (or that repeated another): digest only. */
  readonly dedupedBlocks: number;
  /** Dirty blocks that are all zeros now: nothing stored or sent. */
  readonly zeroBlocks: number;
  /** Dirty blocks never fetched locally: they still hold the image's content. */
  readonly absentBlocks: number;
  readonly blockBytesSent: number;
  /** What crossed the wire both ways (0 for a repository directory). */
  readonly wireBytesSent: number;
  readonly wireBytesReceived: number;
  /** Wire bytes beyond the block data: digests offered, the commit's table, HTTP framing. */
  readonly overheadBytes: number;
  readonly seconds: number;
  /** The commit had been made by an earlier, interrupted run of this snapshot. */
  readonly existing: boolean;
  /** Marks of an interrupted earlier snapshot were merged back before this one. */
  readonly recoveredMarks: number;
}

const DEFAULT_BATCH_BYTES = 16 * 1024 * 1024;

export async function snapshot(options: SnapshotOptions): Promise<SnapshotResult> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  validateImageName(options.as);
  const canonical = canonicalWriteUri(options.to);
  const mapPath = mapPathOf(options.disk);
  if (!(await access(mapPath).then(() => true, () => false))) throw new SnapshotNoMap(options.disk, mapPath);
  const lock = await lockDisk(options.disk);
  let local: LocalDisk | undefined;
  let map: BlockMap | undefined;
  let target: WriteTarget | undefined;
  try {
    map = await BlockMap.open(mapPath, () => local ? local.flush() : Promise.resolve());
    local = await LocalDisk.openOrCreate(options.disk, map.header.size, { create: false });
    await lock.holdIdentity(await local.identity());
    await checkDiskBinding(map, local, log);
    const sendingPath = sendingSetPath(mapPath);
    const leftover = await recoverLeftover(map, sendingPath, log).catch((error: Error) => {
      // --full hashes every block: marks that cannot be recovered are not needed (the set is replaced).
      if (!(options.full && error instanceof SendingSetCorrupt)) throw error;
      log(`${error.message}: --full hashes every block instead`);
      return undefined;
    });
    target = await openWriteTarget(options.to, options);
    const label = await bindTarget(map, target, canonical, log);
    const result = await ship({ map, local, target, label, canonical, sendingPath, leftover: leftover?.target === label ? leftover : undefined, options });
    return { ...result, recoveredMarks: leftover?.merged ?? 0, seconds: (performance.now() - started) / 1000 };
  } finally {
    await map?.close().catch((error: Error) => log(`${mapPath}: ${error.message}`));
    await local?.close();
    await target?.close();
    await lock.release();
  }
}

/** A leftover in-flight set: already shipped (the map says so), or merged back into the W bits. */
export async function recoverLeftover(map: BlockMap, path: string, log: (line: string) => void): Promise<(SendingSet & { merged: number }) | undefined> {
  const set = await readSendingSet(path);
  if (!set) return undefined;
  const index = map.targetIndex(set.target);
  if (index < 0 || set.blocks.length !== map.blockCount) {
    throw new SnapshotBaselineChanged(path, set.target, 'names a target or block count this map does not have');
  }
  if (map.shippingOf(set.target)?.lastSession === set.session) {
    log(`an earlier snapshot to ${set.target} was committed before it was interrupted: nothing to recover`);
    await removeSendingSet(path);
    return { ...set, merged: 0 };
  }
  const merged = set.blocks.count();
  map.remarkModified(index, set.blocks);
  await map.commit();
  await removeSendingSet(path);
  log(`an interrupted snapshot to ${set.target} left ${merged} blocks in flight: marked again`);
  return { ...set, merged };
}

export interface ShipContext {
  readonly map: BlockMap;
  readonly local: LocalDisk;
  readonly target: WriteTarget;
  readonly label: string;
  readonly canonical: string;
  readonly sendingPath: string;
  readonly leftover?: SendingSet;
  readonly options: SnapshotOptions;
  /** A running disk's instant and view of it (live-snapshot.ts); absent for a disk at rest. */
  readonly instant?: SnapshotInstant;
}

/** How a snapshot of a running disk fixes its instant and reads the disk as of then. */
export interface SnapshotInstant {
  /**
   * Runs `fix` at the instant (the guest frozen, its writes held), then lets the guest go on.
   * `written`: blocks marked outside the map (QEMU's writes bitmap after a pivot): shipped too, and
   * read like present ones (QEMU wrote them locally; the map learns so only at the fold).
   */
  at(fix: (written?: Bitset) => Promise<Bitset>): Promise<void>;
  /** Blocks [first, first + count) (all in the fixed set) as of the instant. */
  read(first: number, count: number): Promise<Buffer>;
}

type Shipped = Omit<SnapshotResult, 'seconds' | 'recoveredMarks'>;

export async function ship(context: ShipContext): Promise<Shipped> {
  const { map, local, target, label, options } = context;
  const { size, blockSize, blockCount } = map.header;
  const index = map.targetIndex(label);
  const baseline = map.shippingOf(label)?.baseline;
  let baseDigests: Buffer | undefined;
  if (baseline) {
    const bytes = await target.manifest(baseline.ref);
    if (!bytes) throw new SnapshotBaselineChanged(options.to, baseline.ref, 'is missing');
    if (sha256Hex(bytes) !== baseline.manifestDigest) throw new SnapshotBaselineChanged(options.to, baseline.ref, 'is not the version that was shipped (its manifest differs)');
    baseDigests = decodeManifest(bytes).digests;
  } else if (map.present.count() < blockCount) {
    throw new SnapshotNeedsFullDisk(options.to, map.header.image, blockCount - map.present.count());
  }
  const reuse = context.leftover && context.leftover.name === options.as;
  const session = reuse ? context.leftover!.session : randomBytes(12).toString('base64url');
  let blocks: Bitset | undefined;
  let sendable!: Bitset;
  // Step 1: the marks move to the durable in-flight set before the map lets go of them. For a
  // running disk this is the snapshot's instant (the guest frozen, its writes held).
  const fix = async (written?: Bitset): Promise<Bitset> => {
    const fixed = map.modified[index]!.copy();
    if (written) fixed.orWith(written);
    if (options.full || !baseDigests) fixed.orWith(map.present);
    await writeSendingSet(context.sendingPath, { target: label, session, name: options.as, blocks: fixed });
    map.clearModifiedWhere(index, fixed);
    blocks = fixed;
    // The marked blocks present now are read; an absent one still holds the image's content.
    const absent = fixed.copy();
    absent.clearWhere(map.present);
    if (written) absent.clearWhere(written);
    sendable = fixed.copy();
    sendable.clearWhere(absent);
    return sendable;
  };
  /** The commit was asked for: it may have landed even if its answer never came. */
  let commitAsked = false;
  try {
    if (context.instant) await context.instant.at(fix);
    else await fix();
    await map.commit();
    const start = await target.begin({ name: options.as, size, blockSize, ...(baseline ? { parent: baseline.ref } : {}) });
    const digests = baseDigests ? Buffer.from(baseDigests) : Buffer.alloc(blockCount * DIGEST_BYTES);
    // A running disk is read as of its instant (runs start and end on block boundaries).
    const instant = context.instant;
    const source: BlockSource = instant ? { read: (offset, length) => instant.read(offset / blockSize, Math.ceil(length / blockSize)) } : local;
    const counts = await sendBlocks({ map, source, target, blocks: blocks!, sendable, digests, options });
    commitAsked = true;
    const commit = await target.commitImage({
      name: options.as, version: start.version, size, blockSize, digests, session, ...(baseline ? { parent: baseline.ref } : {}),
    });
    // Step 3: the target's new baseline, then the in-flight set may go.
    map.setShipping(label, { uri: context.canonical, baseline: { ref: commit.ref, manifestDigest: commit.manifestDigest }, lastSession: session });
    // A running disk is certified by its device at close (the guest writes on meanwhile).
    if (!context.instant) await certifyDisk(map, local, manifestOf(options.as, commit.version, size, blockSize, digests)).catch(() => undefined);
    await map.commit();
    await removeSendingSet(context.sendingPath);
    const wire = target.wire();
    return {
      ref: commit.ref, blockSize, ...(baseline ? { parent: baseline.ref } : {}), target: label, uri: options.to, existing: commit.existing,
      ...counts, wireBytesSent: wire.bytesSent, wireBytesReceived: wire.bytesReceived,
      overheadBytes: wire.bytesSent + wire.bytesReceived === 0 ? 0 : wire.bytesSent + wire.bytesReceived - counts.blockBytesSent,
    };
  } catch (error) {
    if (blocks) map.remarkModified(index, blocks);
    await map.commit();
    // A commit whose answer was lost (the server died, the link broke) may have landed: the
    // in-flight set stays, so that a retry reuses its session and finds that version (the
    // repository answers a retried session with the same content with its version) instead of
    // committing the same content again. Its blocks are marked again above either way.
    if (!commitAsked) await removeSendingSet(context.sendingPath);
    if (options.signal?.aborted) throw new SnapshotInterrupted(options.disk);
    throw error;
  }
}

interface SendContext {
  readonly map: BlockMap;
  /** The disk as of the snapshot's instant. */
  readonly source: BlockSource;
  readonly target: WriteTarget;
  readonly blocks: Bitset;
  /** Of `blocks`, the ones present at the instant: read and sent; the others keep the baseline's digest. */
  readonly sendable: Bitset;
  /** The new version's digest table, updated in place. */
  readonly digests: Buffer;
  readonly options: SnapshotOptions;
}

type SendCounts = Pick<SnapshotResult, 'dirtyBlocks' | 'sentBlocks' | 'dedupedBlocks' | 'zeroBlocks' | 'absentBlocks' | 'blockBytesSent'>;

/** Step 2: batch by batch, read and hash the dirty blocks, offer their digests, send what is lacking. */
async function sendBlocks(context: SendContext): Promise<SendCounts> {
  const { map, source, target, blocks, sendable, digests, options } = context;
  const { size, blockSize } = map.header;
  const batchBlocks = Math.max(1, Math.floor((options.batchBytes ?? DEFAULT_BATCH_BYTES) / blockSize));
  const counts = { dirtyBlocks: blocks.count(), sentBlocks: 0, dedupedBlocks: 0, zeroBlocks: 0, absentBlocks: 0, blockBytesSent: 0 };
  const seen = new Set<string>();
  let done = 0;
  for (let next = blocks.nextSet(0); next >= 0;) {
    if (options.signal?.aborted) throw new SnapshotInterrupted(options.disk);
    const batch: number[] = [];
    for (; next >= 0 && batch.length < batchBlocks; next = blocks.nextSet(next + 1)) batch.push(next);
    // `seen` spans the whole snapshot: a digest is offered once, its repeats only recorded.
    const { offered, repeats } = await readAndHashBlocks(source, presentBlocks(sendable, batch, counts), { size, blockSize }, seen, {
      onZero: (index) => {
        ZERO_DIGEST.copy(digests, index * DIGEST_BYTES);
        counts.zeroBlocks++;
      },
      onDigest: (index, digest) => {
        digest.copy(digests, index * DIGEST_BYTES);
        return true;
      },
    });
    counts.dedupedBlocks += repeats.length;
    if (offered.length > 0) {
      const lacking = await target.missing(Buffer.concat(offered.map((block) => block.digest)));
      const sending = offered.filter((_, i) => lacking[i] === 1);
      counts.dedupedBlocks += offered.length - sending.length;
      if (sending.length > 0) await target.putBlocks(sending);
      counts.sentBlocks += sending.length;
      counts.blockBytesSent += sending.reduce((sum, block) => sum + block.data.length, 0);
    }
    done += batch.length;
    await options.onProgress?.({ blockSize, doneBlocks: done, dirtyBlocks: counts.dirtyBlocks, blockBytesSent: counts.blockBytesSent });
  }
  return counts;
}

/**
 * The present blocks of `batch`. A dirty block that is absent was never fetched nor written whole:
 * it still reads as the image, so its digest stays the baseline's.
 */
function presentBlocks(sendable: Bitset, batch: readonly number[], counts: { absentBlocks: number }): number[] {
  const present = batch.filter((index) => sendable.get(index));
  counts.absentBlocks += batch.length - present.length;
  return present;
}

function manifestOf(name: string, version: number, size: number, blockSize: number, digests: Buffer): Manifest {
  return { name, version, size, blockSize, blockCount: Math.ceil(size / blockSize), digests, created: new Date().toISOString() };
}
