// A cloud-init NoCloud seed: a small FAT disk labelled CIDATA holding `user-data` and `meta-data`
// (the convention Lima, testcloud and Packer use), built with mkfs.fat and mcopy (dosfstools,
// mtools: nothing mounted, no root), and the QEMU arguments attaching it read-only as a second
// virtio disk. cloud-init in the guest finds it by its label.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { LazybootError } from '../lib/base/errors.js';

/** Size of the seed filesystem: room for user-data up to SEED_MAX_USER_DATA plus FAT overhead. */
const SEED_KIB = 2048;
export const SEED_MAX_USER_DATA = 1024 * 1024;

/** A host tool the seed needs is missing or failed. */
export class SeedDiskFailed extends LazybootError {
  constructor(detail: string, hint?: string) {
    super(`cannot build the cloud-init seed disk: ${detail}`, hint);
  }
}

export interface SeedContents {
  /** The user's user-data, verbatim. */
  readonly userData: Buffer;
  /** `local-hostname` in meta-data (cloud-init sets it during boot). */
  readonly hostname?: string;
  /** `public-keys`: cloud-init authorizes them for the image's default user (and root, as its config says). */
  readonly publicKeys?: readonly string[];
  /** `instance-id`: a fresh one per run unless given, so cloud-init treats every run as a first boot. */
  readonly instanceId?: string;
}

function runTool(command: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    // mkfs.fat lives in /usr/sbin, which a user's PATH may lack.
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? new SeedDiskFailed(`${command} is not installed`, 'install dosfstools and mtools (apt-get install dosfstools mtools)') : error),
    );
    child.on('close', (code) => (code === 0 ? resolve() : reject(new SeedDiskFailed(`${command} failed: ${stderr.trim().split('\n').pop() ?? `exit ${code}`}`))));
  });
}

export function metaDataOf(contents: SeedContents): string {
  const lines = [`instance-id: ${contents.instanceId ?? `lazyboot-${randomUUID()}`}`];
  if (contents.hostname !== undefined) lines.push(`local-hostname: ${contents.hostname}`);
  // JSON strings are YAML strings: a key's comment may hold any character.
  if (contents.publicKeys?.length) lines.push('public-keys:', ...contents.publicKeys.map((key) => `  - ${JSON.stringify(key)}`));
  return `${lines.join('\n')}\n`;
}

/** Writes the seed image `seed.img` into `dir` (which the caller owns and removes); returns its path. */
export async function buildSeedDisk(dir: string, contents: SeedContents): Promise<string> {
  if (contents.userData.length > SEED_MAX_USER_DATA) throw new SeedDiskFailed(`user-data is ${contents.userData.length} bytes, more than ${SEED_MAX_USER_DATA}`);
  const image = path.join(dir, 'seed.img');
  const userData = path.join(dir, 'user-data');
  const metaData = path.join(dir, 'meta-data');
  await writeFile(userData, contents.userData);
  await writeFile(metaData, metaDataOf(contents));
  try {
    await runTool('mkfs.fat', ['-n', 'CIDATA', '-C', image, String(SEED_KIB)]);
    await runTool('mcopy', ['-i', image, userData, metaData, '::']);
  } finally {
    await rm(userData, { force: true });
    await rm(metaData, { force: true });
  }
  return image;
}

/** Node name and device id of the seed disk. */
export const SEED_NODE = 'lazyboot-seed';

/** Attaches the seed read-only as a virtio disk (after the boot disk, so it never boots). */
export function seedDiskArgs(image: string): string[] {
  const node = { driver: 'raw', 'node-name': SEED_NODE, 'read-only': true, file: { driver: 'file', filename: image, 'read-only': true } };
  return ['-blockdev', JSON.stringify(node), '-device', JSON.stringify({ driver: 'virtio-blk-pci', id: `${SEED_NODE}-dev`, drive: SEED_NODE, serial: 'cidata' })];
}
