// The native graph's qcow2 *metadata* file: a qcow2 whose external data file is the local raw disk
// (each cluster at its own offset, so the raw disk stays the disk), and whose L2 entries say which
// clusters the raw disk already holds. Unallocated clusters read from the backing (the COR device).
//
// How it is made, and why (QEMU 7.2, measured):
// - `qemu-img create -o data_file=EXISTING` wipes EXISTING: create with a throwaway data file,
//   then `qemu-img amend -o data_file=DISK` (the disk's data stays intact).
// - `preallocation=metadata` writes every L2 table with every entry pointing at its own offset in
//   the data file (identity mapping), and the refcounts for those tables: after that, marking a
//   cluster present or absent is one 8-byte L2 entry, no allocation, no refcount change (data-file
//   clusters are not refcounted). So the map's R bits become the L2 entries in one pass over the
//   L2 tables (1.25 MiB for a 10 GiB disk of 64 KiB clusters), done while QEMU does not have it open.
// - `data_file_raw=on` cannot be combined with a backing file: it stays off.
import { open, rm, type FileHandle } from 'node:fs/promises';
import { execa } from 'execa';
import { ClusterSizeUnsupported } from './errors.js';
import { Qcow2MetadataError } from './errors.js';

/** qcow2 takes clusters of 512 B to 2 MiB, powers of two. */
export const QCOW2_MIN_CLUSTER = 512;
export const QCOW2_MAX_CLUSTER = 2 * 1024 * 1024;

const L2_COPIED = 1n << 63n;
const OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;

export interface Qcow2MetadataOptions {
  /** The metadata file to create (overwritten). */
  readonly path: string;
  /** The local raw disk: the external data file, kept intact. */
  readonly dataFile: string;
  /** Virtual size in bytes (the image's size). */
  readonly size: number;
  /** Cluster size = the image's block size. */
  readonly clusterSize: number;
  readonly qemuImg?: string;
}

function checkClusterSize(clusterSize: number): void {
  const powerOfTwo = (clusterSize & (clusterSize - 1)) === 0;
  if (!powerOfTwo || clusterSize < QCOW2_MIN_CLUSTER || clusterSize > QCOW2_MAX_CLUSTER) throw new ClusterSizeUnsupported(clusterSize);
}

async function qemuImg(binary: string, step: string, args: string[]): Promise<void> {
  // Own process group (detached), like QEMU itself: a terminal's Ctrl-C goes to the whole
  // foreground group, and must reach lazyboot (which tears down in order), not kill this step.
  const result = await execa(binary, args, { reject: false, stdin: 'ignore', detached: true });
  if (result.exitCode !== 0) throw new Qcow2MetadataError(step, (result.stderr || result.stdout || `exit ${result.exitCode}`).trim().split('\n').pop()!);
}

/**
 * Creates the metadata file over `dataFile` with every cluster allocated at its own offset; call
 * markPresentClusters next (QEMU must not have the file open until then).
 */
export async function createQcow2Metadata(options: Qcow2MetadataOptions): Promise<void> {
  checkClusterSize(options.clusterSize);
  const binary = options.qemuImg ?? 'qemu-img';
  const throwaway = `${options.path}.create-data`;
  try {
    await qemuImg(binary, 'create', [
      'create', '-q', '-f', 'qcow2',
      '-o', `cluster_size=${options.clusterSize},data_file=${throwaway},preallocation=metadata`,
      options.path, String(options.size),
    ]);
    await qemuImg(binary, 'attach the disk to', ['amend', '-q', '-o', `data_file=${options.dataFile}`, options.path]);
  } finally {
    await rm(throwaway, { force: true });
  }
}

/** The layout and the L1 table (the offsets of the L2 tables) of a file made by createQcow2Metadata. */
interface L1Table {
  readonly clusterSize: number;
  readonly entriesPerL2: number;
  readonly l1Size: number;
  /** The offset of L2 table `index` in the file, 0 where it has none (or beyond the L1 table). */
  l2Offset(index: number): number;
}

/** Opens the file for update, reads its L1 table, runs `update`, then syncs and closes the file. */
async function updateL2Tables<T>(path: string, update: (handle: FileHandle, table: L1Table) => Promise<T>): Promise<T> {
  const handle = await open(path, 'r+');
  try {
    const result = await update(handle, await readL1Table(handle, path));
    await handle.sync();
    return result;
  } finally {
    await handle.close();
  }
}

async function readL1Table(handle: FileHandle, path: string): Promise<L1Table> {
  const header = Buffer.alloc(104);
  await handle.read(header, 0, header.length, 0);
  if (header.readUInt32BE(0) !== 0x514649fb) throw new Qcow2MetadataError('read', `${path} is not a qcow2 file`);
  const incompatible = header.readBigUInt64BE(72);
  if ((incompatible & 4n) === 0n) throw new Qcow2MetadataError('read', `${path} has no external data file`);
  const clusterSize = 2 ** header.readUInt32BE(20);
  const l1Size = header.readUInt32BE(36);
  const l1 = Buffer.alloc(l1Size * 8);
  await handle.read(l1, 0, l1.length, Number(header.readBigUInt64BE(40)));
  return {
    clusterSize, l1Size, entriesPerL2: clusterSize / 8,
    l2Offset: (index) => (index < l1Size ? Number(l1.readBigUInt64BE(index * 8) & OFFSET_MASK) : 0),
  };
}

/**
 * Writes every L2 entry from `isPresent(cluster)`: present clusters point at their own offset in
 * the data file, absent ones are unallocated (they read from the backing). Returns the clusters
 * marked present. The file must come from createQcow2Metadata and QEMU must not have it open.
 */
export async function markPresentClusters(path: string, clusterCount: number, isPresent: (cluster: number) => boolean): Promise<number> {
  return updateL2Tables(path, async (handle, { clusterSize, entriesPerL2, l1Size, l2Offset: l2OffsetOf }) => {
    const table = Buffer.alloc(clusterSize);
    let present = 0;
    for (let i = 0; i < l1Size; i++) {
      const l2Offset = l2OffsetOf(i);
      const first = i * entriesPerL2;
      if (first >= clusterCount) break;
      if (l2Offset === 0) throw new Qcow2MetadataError('update', `${path} has no L2 table for clusters from ${first} (not made by preallocation=metadata)`);
      table.fill(0);
      const count = Math.min(entriesPerL2, clusterCount - first);
      for (let j = 0; j < count; j++) {
        const cluster = first + j;
        if (!isPresent(cluster)) continue;
        table.writeBigUInt64BE(BigInt(cluster) * BigInt(clusterSize) | L2_COPIED, j * 8);
        present++;
      }
      await handle.write(table, 0, clusterSize, l2Offset);
    }
    return present;
  });
}

/**
 * Marks `clusters` present (each at its own offset) in a file made by createQcow2Metadata: the
 * blocks that became present after markPresentClusters ran, written while the guest is paused.
 */
export async function addPresentClusters(path: string, clusters: readonly number[]): Promise<void> {
  if (clusters.length === 0) return;
  await updateL2Tables(path, async (handle, { clusterSize, entriesPerL2, l2Offset: l2OffsetOf }) => {
    const entry = Buffer.alloc(8);
    for (const cluster of clusters) {
      const l2Offset = l2OffsetOf(Math.floor(cluster / entriesPerL2));
      if (l2Offset === 0) throw new Qcow2MetadataError('update', `${path} has no L2 table for cluster ${cluster}`);
      entry.writeBigUInt64BE(BigInt(cluster) * BigInt(clusterSize) | L2_COPIED);
      await handle.write(entry, 0, 8, l2Offset + (cluster % entriesPerL2) * 8);
    }
  });
}
