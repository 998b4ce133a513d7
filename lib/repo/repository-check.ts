// `lazyboot repo check`: walks every file of a repository and reports what is damaged or does not
// belong there. With repair it removes only what nothing refers to (packs without an index and temp
// files, left by writers that are gone) and tightens permissions; never a referenced file.
import { chmod, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { processAlive } from '../base/process-alive.js';
import { decodePackIndex, type PackIndexEntry } from './pack-index.js';
import { decodeManifest } from './manifest-codec.js';
import { isZeroDigest, digestOf } from './manifest-format.js';
import { formatImageRef, isValidImageName } from './image-name.js';
import { MARKER } from './repository-marker.js';
import { DIR_MODE, FILE_MODE } from './modes.js';

export interface Finding {
  readonly file: string;
  readonly problem: string;
  /** How to fix it without losing anything referenced; absent when only a person can. */
  readonly repair?: () => Promise<void>;
  /** A pack without an index: unreferenced only while every manifest finds all its blocks. */
  readonly orphanPack?: boolean;
  /** An unreferenced object young enough to belong to an import still running: noted, kept, not a problem. */
  readonly young?: boolean;
  /** An unreferenced pack's index as the walk saw it written: a newer one means a writer reuses it (store-check.ts). */
  readonly indexWritten?: Date;
  repaired?: boolean;
}

export interface CheckResult {
  readonly findings: Finding[];
  readonly images: number;
  readonly packs: number;
}

/** `pack-TIME-PID-RANDOM.pack` (pack-store.ts) and `.tmp-PID-RANDOM` (durable-file.ts). */
export const PACK_NAME = /^pack-[0-9a-f]+-([0-9]+)-[0-9a-f]+\.pack$/;
export const INDEX_NAME = /^pack-[0-9a-f]+-[0-9]+-[0-9a-f]+\.idx$/;
const TEMP_NAME = /^\.tmp-([0-9]+)-[0-9a-f]+$/;
export const MANIFEST_NAME = /^([1-9][0-9]{0,8})\.manifest$/;

const errorCode = (error: unknown): string => (error as NodeJS.ErrnoException).code ?? (error as Error).message;

/** A writer's leftover is removable once its process is gone (a live one may still finish it). */
function leftover(file: string, pid: number, what: string): Finding | undefined {
  if (processAlive(pid) && pid !== process.pid) return undefined;
  return { file, problem: `${what}, left by an interrupted write (process ${pid} is gone); nothing refers to it`, repair: () => unlink(file) };
}

interface PackWalk {
  readonly findings: Finding[];
  /** Digests (latin1 keys) of every block a valid index lists over a long enough pack. */
  readonly stored: Set<string>;
  readonly packs: number;
}

async function checkPacks(dir: string, verify: boolean): Promise<PackWalk> {
  const findings: Finding[] = [];
  const stored = new Set<string>();
  const entries = await readdir(dir, { withFileTypes: true });
  const names = new Set(entries.map((entry) => entry.name));
  let packs = 0;
  for (const entry of entries) {
    const file = join(dir, entry.name);
    const temp = TEMP_NAME.exec(entry.name);
    const pack = PACK_NAME.exec(entry.name);
    if (!entry.isFile()) {
      findings.push({ file, problem: 'is not a regular file and does not belong in packs/; move it out of the repository' });
    } else if (temp) {
      const found = leftover(file, Number(temp[1]), 'temp file');
      if (found) findings.push(found);
    } else if (pack) {
      if (!names.has(entry.name.replace(/\.pack$/, '.idx'))) {
        const found = leftover(file, Number(pack[1]), 'pack without an index');
        if (found) findings.push({ ...found, orphanPack: true });
      }
    } else if (INDEX_NAME.test(entry.name)) {
      packs++;
      const problem = await checkIndex(dir, entry.name, stored, verify);
      if (problem) findings.push({ file, problem });
    } else {
      findings.push({ file, problem: 'is not a pack, index or temp file and does not belong in packs/; move it out of the repository' });
    }
  }
  return { findings, stored, packs };
}

/** How one pack and its index are read: from files, or from objects in a store (store-check.ts). */
export interface PackReads {
  /** The index's bytes (throws when it cannot be read). */
  index(): Promise<Buffer>;
  /** The pack's size, undefined when it is missing (throws when it cannot be looked at). */
  packSize(): Promise<number | undefined>;
  /** The entries whose bytes in the pack do not hash to their digest (--verify). */
  damaged(entries: readonly PackIndexEntry[]): Promise<PackIndexEntry[]>;
}

/** Adds the index's (intact) blocks to `stored`; returns what is wrong with it, if anything. */
async function checkIndex(dir: string, indexName: string, stored: Set<string>, verify: boolean): Promise<string | undefined> {
  const packPath = join(dir, indexName.replace(/\.idx$/, '.pack'));
  return checkIndexWith({
    index: () => readFile(join(dir, indexName)),
    packSize: () => stat(packPath).then((info) => info.size, (error) => {
      if (errorCode(error) === 'ENOENT') return undefined;
      throw error;
    }),
    damaged: (entries) => damagedBlocks(packPath, entries),
  }, indexName, stored, verify);
}

/** The index check of both walks: the index decodes, its pack holds every block it lists (and they hash right with `verify`). */
export async function checkIndexWith(reads: PackReads, indexName: string, stored: Set<string>, verify: boolean): Promise<string | undefined> {
  let entries;
  try {
    entries = decodePackIndex(await reads.index());
  } catch (error) {
    return `cannot be read (${errorCode(error)})`;
  }
  if (typeof entries === 'string') return `${entries}; the blocks of its pack are unreachable (restore the index, or re-import the images that need them)`;
  const packName = indexName.replace(/\.idx$/, '.pack');
  let packSize: number | undefined;
  try {
    packSize = await reads.packSize();
  } catch (error) {
    return `lists ${entries.length} blocks of ${packName}, which cannot be read (${errorCode(error)})`;
  }
  if (packSize === undefined) return `lists ${entries.length} blocks of ${packName}, which is missing`;
  const size = packSize;
  const present = entries.filter((entry) => entry.offset + entry.length <= size);
  const damaged = verify ? await reads.damaged(present) : [];
  for (const entry of present) if (!damaged.includes(entry)) stored.add(entry.digest.toString('latin1'));
  let needed = 0; // a loop, not Math.max(...entries): an index can list millions of blocks
  for (const entry of entries) needed = Math.max(needed, entry.offset + entry.length);
  if (needed > size) return `needs ${packName} to hold ${needed} bytes, but it has ${size} (truncated)`;
  if (damaged.length > 0) {
    return `lists ${damaged.length} block(s) of ${packName} that fail their SHA-256 (first at offset ${damaged[0]!.offset}); re-import the images that use them, or restore the pack`;
  }
  return undefined;
}

/** The entries whose bytes in the pack do not hash to their digest (--verify). */
async function damagedBlocks(packPath: string, entries: readonly PackIndexEntry[]): Promise<PackIndexEntry[]> {
  const handle = await open(packPath, 'r');
  try {
    return await damagedEntries(entries, (target, position) => handle.read(target, 0, target.length, position).then(() => undefined));
  } finally {
    await handle.close();
  }
}

/** The entries whose bytes, as `read` gives them, do not hash to their digest. */
export async function damagedEntries(entries: readonly PackIndexEntry[], read: (target: Buffer, position: number) => Promise<void>): Promise<PackIndexEntry[]> {
  const damaged: PackIndexEntry[] = [];
  let buffer = Buffer.alloc(0);
  for (const entry of entries) {
    if (buffer.length < entry.length) buffer = Buffer.allocUnsafe(entry.length);
    const block = buffer.subarray(0, entry.length);
    await read(block, entry.offset);
    if (!createHash('sha256').update(block).digest().equals(entry.digest)) damaged.push(entry);
  }
  return damaged;
}

/** What the manifest walk learns: the blocks stored, how many manifests miss some, and (for store-check.ts) the blocks referred to. */
export interface BlockRefs {
  readonly stored: Set<string>;
  manifestsMissingBlocks: number;
  /** Manifests that could not be decoded: they may refer to any block. */
  undecodable?: number;
  /** When present, collects the digests (latin1) every decoded manifest refers to. */
  readonly referenced?: Set<string>;
}

async function checkImageDirectory(dir: string, name: string, refs: BlockRefs, findings: Finding[]): Promise<number> {
  let versions = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = join(dir, entry.name);
    const temp = TEMP_NAME.exec(entry.name);
    const manifestName = MANIFEST_NAME.exec(entry.name);
    if (temp && entry.isFile()) {
      const found = leftover(file, Number(temp[1]), 'temp file');
      if (found) findings.push(found);
    } else if (manifestName && entry.isFile()) {
      versions++;
      const problem = await checkManifest(() => readFile(file), name, Number(manifestName[1]), refs);
      if (problem) findings.push({ file, problem });
    } else {
      findings.push({ file, problem: `is not a manifest and does not belong in ${join('manifests', name)}/; move it out of the repository` });
    }
  }
  return versions;
}

/** What is wrong with manifest NAME/VERSION (`read` gives its bytes), if anything; the blocks it needs are looked up in `refs`. */
export async function checkManifest(read: () => Promise<Buffer>, name: string, version: number, refs: BlockRefs): Promise<string | undefined> {
  let manifest;
  try {
    manifest = decodeManifest(await read());
  } catch (error) {
    refs.undecodable = (refs.undecodable ?? 0) + 1;
    return `does not decode (${error instanceof Error ? error.message : String(error)}); restore it, or re-import ${formatImageRef(name, version)}`;
  }
  if (manifest.name !== name || manifest.version !== version) return `names ${formatImageRef(manifest.name, manifest.version)} instead of ${formatImageRef(name, version)}`;
  let missing = 0;
  let first: string | undefined;
  for (let index = 0; index < manifest.blockCount; index++) {
    const digest = digestOf(manifest, index);
    if (isZeroDigest(digest)) continue;
    refs.referenced?.add(digest.toString('latin1'));
    if (refs.stored.has(digest.toString('latin1'))) continue;
    missing++;
    first ??= `block ${index}, ${digest.toString('hex')}`;
  }
  if (missing > 0) refs.manifestsMissingBlocks++;
  if (missing > 0) return `refers to ${missing} block(s) that are missing or damaged (first: ${first}); restore the pack and index, or re-import ${formatImageRef(name, version)}`;
  return undefined;
}

/** Group- or world-accessible files and directories: tightened to 0600/0700 by repair. */
async function checkModes(path: string, findings: Finding[]): Promise<void> {
  const info = await stat(path);
  const wanted = info.isDirectory() ? DIR_MODE : FILE_MODE;
  if ((info.mode & 0o077) !== 0) {
    findings.push({ file: path, problem: `is accessible to other users (mode ${(info.mode & 0o777).toString(8).padStart(4, '0')})`, repair: () => chmod(path, wanted) });
  }
  if (!info.isDirectory()) return;
  for (const entry of await readdir(path, { withFileTypes: true })) {
    if (entry.isFile() || entry.isDirectory()) await checkModes(join(path, entry.name), findings);
  }
}

/**
 * Checks the repository in `dir` (whose marker Repository.open has checked): every file, every
 * manifest's blocks against the indexes, and with `verify` every stored block's SHA-256.
 */
export async function checkRepository(dir: string, options: { repair?: boolean; verify?: boolean } = {}): Promise<CheckResult> {
  const packs = await checkPacks(join(dir, 'packs'), options.verify ?? false);
  let findings = [...packs.findings];
  const refs: BlockRefs = { stored: packs.stored, manifestsMissingBlocks: 0 };
  let images = 0;
  const manifests = join(dir, 'manifests');
  for (const entry of await readdir(manifests, { withFileTypes: true })) {
    const file = join(manifests, entry.name);
    if (!entry.isDirectory()) {
      findings.push({ file, problem: 'is not an image directory and does not belong in manifests/; move it out of the repository' });
    } else if (!isValidImageName(entry.name)) {
      findings.push({ file, problem: 'is not a valid image name (letters, digits, ".", "_", "-", "+", starting with a letter or digit); move it out of the repository' });
    } else {
      images += (await checkImageDirectory(file, entry.name, refs, findings)) > 0 ? 1 : 0;
    }
  }
  if (refs.manifestsMissingBlocks > 0) {
    // The missing blocks may be in a pack whose index was lost: such a pack is kept.
    findings = findings.map(({ repair, ...finding }) =>
      finding.orphanPack
        ? { ...finding, problem: `pack without an index; kept, because ${refs.manifestsMissingBlocks} manifest(s) refer to blocks no index lists, which may be in it (restore its index, or re-import those images and run --repair again)` }
        : { repair, ...finding },
    );
  }
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (![MARKER, 'packs', 'manifests', 'objects', 'repo.sock'].includes(entry.name)) {
      findings.push({ file: join(dir, entry.name), problem: 'does not belong in a repository; move it out' });
    }
  }
  await checkModes(dir, findings);
  if (options.repair) {
    for (const finding of findings) {
      if (!finding.repair) continue;
      // A file another process removed meanwhile is repaired too; any other failure leaves it reported.
      await finding.repair().then(
        () => (finding.repaired = true),
        (error: NodeJS.ErrnoException) => void (finding.repaired = error.code === 'ENOENT'),
      );
    }
  }
  return { findings, images, packs: packs.packs };
}
