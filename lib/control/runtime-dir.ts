// Where the control sockets of running VMs live: `$XDG_RUNTIME_DIR/lazyboot/vms/` (the user's own
// runtime dir), or, when XDG_RUNTIME_DIR is unset, `$TMPDIR/lazyboot-vms-UID/`. Either directory is
// made 0700 and must be ours and not a symlink: another user could otherwise plant a socket that
// `lazyboot stop NAME` would talk to. A VM's socket is `NAME.sock` in it.
import { lstat, mkdir, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LazybootError, UsageError } from '../base/errors.js';

/** Letters, digits, `.`, `_`, `-`; starts with a letter or digit (a file name, and easy to type). */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class ControlDirUnsafe extends LazybootError {
  constructor(dir: string, why: string) {
    super(`the control socket directory ${dir} is unsafe: ${why}`, `remove it (or set XDG_RUNTIME_DIR to a private directory) and try again`);
  }
}

/** The directory of the control sockets (not created). */
export function controlDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'lazyboot', 'vms');
  return path.join(tmpdir(), `lazyboot-vms-${process.getuid?.() ?? 'user'}`);
}

/** Creates the directory (0700) if missing and checks it is a private directory of this user. */
export async function ensureControlDir(dir = controlDir()): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await lstat(dir);
  if (!info.isDirectory()) throw new ControlDirUnsafe(dir, 'it is not a directory (a symlink?)');
  if (process.getuid && info.uid !== process.getuid()) throw new ControlDirUnsafe(dir, `it belongs to uid ${info.uid}`);
  if ((info.mode & 0o077) !== 0) throw new ControlDirUnsafe(dir, `its mode is ${(info.mode & 0o777).toString(8)}, not 700`);
  return dir;
}

/** Removes the directory once no VM has a socket in it (another VM's socket keeps it). */
export async function removeControlDirIfEmpty(dir = controlDir()): Promise<void> {
  await rmdir(dir).catch(() => undefined);
}

export function socketPathOf(name: string, dir = controlDir()): string {
  return path.join(dir, `${name}.sock`);
}

/** Refuses a VM name that is not a plain file name. */
export function assertVmName(name: string): void {
  if (!NAME_PATTERN.test(name)) throw new UsageError(`bad VM name ${JSON.stringify(name)}`, 'use letters, digits, ".", "_" and "-" (up to 64, starting with a letter or digit)');
}
