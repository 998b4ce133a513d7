// Test helpers for the repository and its NBD server: sample disk files, a served repository.
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { Repository, type ImportResult } from '../../lib/repo/repository.js';
import { repositoryExports } from '../../lib/repo/export-provider.js';
import { startNbdServer, type NbdServer, type NbdServerOptions } from '../../lib/nbd/server.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

/** Offset and byte of the region qemu-io checks with `read -P`. */
export const PATTERN_OFFSET = 2 * MiB;
export const PATTERN_LENGTH = 192 * KiB;
export const PATTERN_BYTE = 0xa5;

/**
 * A disk of `size` bytes: random data, a zero region at 1..2 MiB (reported as a hole), and
 * PATTERN_BYTE at PATTERN_OFFSET. The default size is a multiple of 512 but not of 64 KiB.
 */
export function sampleDisk(size = 3 * MiB + 3 * 512): Buffer {
  const disk = randomBytes(size);
  disk.fill(0, 1 * MiB, Math.min(size, 2 * MiB));
  if (size >= PATTERN_OFFSET + PATTERN_LENGTH) disk.fill(PATTERN_BYTE, PATTERN_OFFSET, PATTERN_OFFSET + PATTERN_LENGTH);
  return disk;
}

export async function writeDisk(path: string, disk: Buffer): Promise<string> {
  await writeFile(path, disk);
  return path;
}

/** Imports a raw file the way the CLI does for raw images. */
export async function importFile(repo: Repository, file: string, name: string, blockSize?: number): Promise<ImportResult> {
  const { size } = await stat(file);
  return repo.importImage(name, createReadStream(file), { size, ...(blockSize ? { blockSize } : {}) });
}

/** Serves `repo` on a unix socket in `dir`; the caller closes it. */
export async function serveRepository(repo: Repository, socketPath: string, events?: Pick<NbdServerOptions, 'log' | 'onConnectionEvent'>): Promise<NbdServer> {
  return startNbdServer({ exports: repositoryExports(repo), socketPath, ...events });
}

/** `nbd+unix:///NAME?socket=PATH` for one export. */
export function exportUri(socketPath: string, name: string): string {
  return `nbd+unix:///${encodeURIComponent(name).replace(/%40/g, '@').replace(/%3A/g, ':')}?socket=${socketPath}`;
}
