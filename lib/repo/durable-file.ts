// Atomic, durable file creation: write a temp file, fsync it, move it into place, fsync the directory.
// A crash leaves either nothing or the whole file visible, never half of it.
import { randomBytes } from 'node:crypto';
import { open, rename, link, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FILE_MODE } from './modes.js';

/** Temp files start with a dot so that directory listings can skip them. */
export function tempPathBeside(path: string): string {
  return join(dirname(path), `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
}

export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeTempDurably(path: string, data: Buffer | Buffer[]): Promise<string> {
  const temp = tempPathBeside(path);
  const handle = await open(temp, 'wx', FILE_MODE);
  try {
    await handle.writev(Array.isArray(data) ? data : [data]);
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw error;
  }
  await handle.close();
  return temp;
}

/** Creates or replaces `path` atomically and durably. */
export async function writeFileDurably(path: string, data: Buffer | Buffer[]): Promise<void> {
  const temp = await writeTempDurably(path, data);
  try {
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
  await fsyncDirectory(dirname(path));
}

/**
 * Creates `path` atomically and durably only if it does not exist yet (link(2) refuses to
 * overwrite). Returns false, leaving nothing behind, when another writer got there first.
 */
export async function createFileDurably(path: string, data: Buffer | Buffer[]): Promise<boolean> {
  const temp = await writeTempDurably(path, data);
  try {
    await link(temp, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await unlink(temp).catch(() => {});
  }
  await fsyncDirectory(dirname(path));
  return true;
}
