// The file that makes a directory a lazyboot repository, and says which format it is in. Readers
// refuse a directory without it (a typo in --repo must not look like an empty repository); only an
// import may turn a missing or empty directory into a repository.
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { NotARepository } from './errors.js';
import { writeFileDurably } from './durable-file.js';
import { DIR_MODE } from './modes.js';
import type { RepositoryStorage } from './storage/storage.js';

export const MARKER = 'lazyboot-repository';
export const FORMAT_VERSION = 1;
const MARKER_TEXT = `lazyboot image repository, format ${FORMAT_VERSION}\n`;
const MARKER_PATTERN = /^lazyboot image repository, format ([0-9]+)\n?$/;

/** The subdirectories every repository has. */
export const REPOSITORY_SUBDIRS = ['packs', 'manifests'] as const;

const IMPORT_HINT = 'import an image into it first (lazyboot image import FILE NAME --repo DIR), or check --repo';

/**
 * Checks that `dir` is a repository of this format, or (with `create`) makes a missing or empty
 * directory one. Throws NotARepository with what the directory is and what to do.
 */
export async function openRepositoryDirectory(dir: string, create: boolean): Promise<void> {
  const info = await stat(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw new NotARepository(dir, `it cannot be read: ${error.code ?? error.message}`, 'check --repo and its permissions');
  });
  if (info && !info.isDirectory()) throw new NotARepository(dir, 'it is a file, not a directory');
  const markerText = info ? await readMarker(dir) : undefined;
  if (markerText === undefined) {
    const entries = info ? await readdir(dir) : [];
    if (entries.length > 0) throw new NotARepository(dir, `it holds other files and no ${MARKER} marker`);
    if (!create) throw new NotARepository(dir, info ? 'it is empty' : 'it does not exist', IMPORT_HINT);
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
    // The marker first: a crash before the subdirectories exist leaves a repository they are added to.
    await writeFileDurably(join(dir, MARKER), Buffer.from(MARKER_TEXT));
  } else {
    checkMarkerText(dir, join(dir, MARKER), markerText);
  }
  for (const sub of REPOSITORY_SUBDIRS) await mkdir(join(dir, sub), { recursive: true, mode: DIR_MODE });
}

/** The marker's text, or undefined if there is none. */
async function readMarker(dir: string): Promise<string | undefined> {
  try {
    const bytes = await readFile(join(dir, MARKER));
    return bytes.length > 256 ? '' : bytes.toString('latin1');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new NotARepository(dir, `its ${MARKER} marker cannot be read (${code ?? (error as Error).message})`, 'check the directory and its permissions');
  }
}

/**
 * The same check for a repository in an object store (an S3 bucket + prefix): there are no
 * directories to make, only the marker object; a prefix holding other objects is refused.
 */
export async function openRepositoryStore(storage: RepositoryStorage, create: boolean): Promise<void> {
  const where = storage.location;
  const bytes = await storage.get(MARKER);
  if (bytes === undefined) {
    const empty = await storage.isEmpty();
    if (!empty) throw new NotARepository(where, `it holds other objects and no ${MARKER} marker`);
    if (!create) throw new NotARepository(where, 'it holds nothing', IMPORT_HINT.replace('--repo DIR', '--repo s3://BUCKET/PREFIX'));
    // Two importers creating one repository write the same bytes: either PUT may win.
    await storage.put(MARKER, Buffer.from(MARKER_TEXT));
    return;
  }
  checkMarkerText(where, storage.describe(MARKER), bytes.length > 256 ? '' : bytes.toString('latin1'));
}

function checkMarkerText(where: string, markerPath: string, markerText: string): void {
  const match = MARKER_PATTERN.exec(markerText);
  if (!match) throw new NotARepository(where, `its ${MARKER} marker is damaged or not lazyboot's`, `if it is a repository, write "${MARKER_TEXT.trim()}" into ${markerPath}`);
  const version = Number(match[1]);
  if (version !== FORMAT_VERSION) {
    throw new NotARepository(where, `it is a repository of format ${version}; this lazyboot reads format ${FORMAT_VERSION}`, 'use the lazyboot version that wrote it');
  }
}
