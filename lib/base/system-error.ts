// A failed system call (open, write, mkdir, …) on a file the user named, as one line that says what
// is wrong and what to do: "cannot open /srv/disk.raw: permission denied (EACCES): check the owner
// and permissions …". Node's own message ("EACCES: permission denied, open '…'") says the first
// half only. Part of lib/base/: every part and the CLI may turn such an error into this one.
import { dirname } from 'node:path';
import { LazybootError } from './errors.js';

const WHAT: Readonly<Record<string, string>> = {
  ENOSPC: 'no space left on the file system',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a part of the path is not a directory',
  EISDIR: 'is a directory',
  EEXIST: 'already exists',
  EMFILE: 'too many open files in this process',
  ENFILE: 'too many open files on this system',
  EIO: 'input/output error from the device',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'too many symbolic links',
};

function whatToDo(code: string, path: string): string {
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return `free space on the file system that holds ${dirname(path)}, or use a place with room`;
    case 'EACCES':
    case 'EPERM':
      return `check the owner and permissions of ${path} and of ${dirname(path)} (or run as the user who owns them)`;
    case 'EROFS':
      return 'use a place on a writable file system';
    case 'ENOENT':
    case 'ENOTDIR':
      return `check that ${dirname(path)} exists and is a directory`;
    case 'EISDIR':
      return 'name a file, not a directory';
    case 'EMFILE':
    case 'ENFILE':
      return 'raise the limit of open files (ulimit -n) or close other programs';
    case 'EIO':
      return 'check the device (dmesg) and the file system';
    default:
      return `check ${path} and retry`;
  }
}

/** Node's error for a failed system call; `dest` is the second path of a rename or link. */
export type SystemError = NodeJS.ErrnoException & { code: string; syscall: string; dest?: string };

/** A system call on a named file failed; `code` is Node's (EACCES, ENOSPC, …). */
export class FileSystemFailed extends LazybootError {
  readonly code: string;
  readonly path: string;

  /**
   * `context` names the file when Node's error has no path (a write to an open descriptor):
   * `path` for the hint, `subject` for the message when it was one of several files.
   */
  constructor(error: SystemError, context?: { path: string; subject?: string }) {
    const path = error.path ?? error.dest ?? context?.path ?? 'a file';
    const subject = error.path ?? error.dest ?? context?.subject ?? path;
    super(`cannot ${error.syscall} ${subject}: ${WHAT[error.code] ?? error.message} (${error.code})`, whatToDo(error.code, path), { cause: error });
    this.code = error.code;
    this.path = path;
  }
}

/** Node's error for a failed system call (fs, net): it carries `code` and `syscall`. */
export function isSystemError(error: unknown): error is SystemError {
  const candidate = error as NodeJS.ErrnoException;
  return candidate instanceof Error && typeof candidate.code === 'string' && typeof candidate.syscall === 'string';
}

/**
 * The error as a LazybootError when it is one, or a failed system call on a named file (or on any
 * file, given `context` to name it); else undefined.
 */
export function asLazybootError(error: unknown, context?: { path: string; subject?: string }): LazybootError | undefined {
  if (error instanceof LazybootError) return error;
  if (isSystemError(error) && (error.path !== undefined || error.dest !== undefined || context)) return new FileSystemFailed(error, context);
  return undefined;
}
