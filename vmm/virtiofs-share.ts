// A host directory shared with the guest over virtiofs: one virtiofsd per directory (QEMU's, from
// qemu-system-common) and the QEMU arguments (vhost-user-fs device, guest RAM in a shared memfd).
// virtiofsd runs as the directory's owner, as root of a user namespace of its own: files
// the guest creates belong to that owner, never to host root (unless root owns the directory),
// the guest cannot chown to anyone else or make device nodes, and virtiofsd's own sandbox
// (pivot_root into the directory) keeps it inside the directory. `readOnly` is enforced on the
// host: virtiofsd sees the directory through a read-only bind mount in its own mount namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { LazybootError } from '../lib/base/errors.js';
import { escapeOption } from '../lib/base/qemu-option.js';

export interface SharedDir {
  readonly hostDir: string;
  /** Absolute path in the guest where it is mounted. */
  readonly guestDir: string;
  readonly readOnly: boolean;
}

/** virtiofsd is missing, or did not start. */
export class ShareFailed extends LazybootError {}

/** Where Debian's qemu-system-common puts the C virtiofsd; $LAZYBOOT_VIRTIOFSD overrides. */
const VIRTIOFSD_PATHS = ['/usr/lib/qemu/virtiofsd', '/usr/libexec/virtiofsd', '/usr/libexec/qemu/virtiofsd'];
const SOCKET_WAIT_MS = 15_000;

export function findVirtiofsd(): string {
  const candidates = process.env.LAZYBOOT_VIRTIOFSD ? [process.env.LAZYBOOT_VIRTIOFSD] : VIRTIOFSD_PATHS;
  const found = candidates.find((candidate) => existsSync(candidate));
  if (!found) throw new ShareFailed(`--share needs virtiofsd, not found at ${candidates.join(' or ')}`, 'install qemu-system-common (Debian), or set LAZYBOOT_VIRTIOFSD');
  return found;
}

/** The mount tag of share `index` (the guest mounts by tag). */
export function shareTag(index: number): string {
  return `lazyboot-share${index}`;
}

/**
 * QEMU arguments for the shares: vhost-user-fs needs the guest's RAM in shared memory (the same
 * size as -m; a second -machine option merges with the first).
 */
export function virtiofsArgs(socketPaths: readonly string[], memoryMiB: number): string[] {
  if (socketPaths.length === 0) return [];
  const args = ['-object', `memory-backend-memfd,id=lazyboot-mem,size=${memoryMiB}M,share=on`, '-machine', 'memory-backend=lazyboot-mem'];
  socketPaths.forEach((socketPath, index) => {
    args.push('-chardev', `socket,id=lazyboot-fs${index},path=${escapeOption(socketPath)}`);
    args.push('-device', `vhost-user-fs-pci,chardev=lazyboot-fs${index},tag=${shareTag(index)},id=lazyboot-fs${index}-dev`);
  });
  return args;
}

/**
 * Run by `unshare --user --map-root-user --mount` as the directory's owner: a private /run for
 * virtiofsd's pid file, the read-only bind mount if asked, then virtiofsd (which pivot_roots into
 * the directory). Arguments: VIRTIOFSD SOCKET SOURCE RO(0|1).
 */
const VIRTIOFSD_WRAPPER = `
mount -t tmpfs -o size=1m,mode=755 lazyboot-run /run || exit 1
if [ "$4" = 1 ]; then mount --bind "$3" "$3" && mount -o remount,bind,ro "$3" || exit 1; fi
exec "$1" --socket-path="$2" -o source="$3" -o cache=auto --rlimit-nofile=0
`;

/** One virtiofsd serving one directory on one socket; close() ends it (idempotent). */
export class VirtiofsDaemon {
  #exited: Promise<void>;
  private constructor(
    readonly share: SharedDir,
    readonly socketPath: string,
    private readonly child: ChildProcess,
    private readonly stderr: () => string,
  ) {
    this.#exited = new Promise((resolve) => child.once('close', () => resolve()));
  }

  /** Starts virtiofsd for `share` and resolves once its socket exists (QEMU connects at start). */
  static async start(share: SharedDir, socketPath: string): Promise<VirtiofsDaemon> {
    const virtiofsd = findVirtiofsd();
    // As the directory's owner (root may become anyone; others stay themselves), whose socket dir it is.
    const owner = process.getuid?.() === 0 ? await stat(share.hostDir) : undefined;
    await mkdir(path.dirname(socketPath), { recursive: true });
    if (owner) await chown(path.dirname(socketPath), owner.uid, owner.gid);
    const child = spawn('unshare', ['--user', '--map-root-user', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', VIRTIOFSD_WRAPPER, 'lazyboot-virtiofsd', virtiofsd, socketPath, share.hostDir, share.readOnly ? '1' : '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
    });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    const daemon = new VirtiofsDaemon(share, socketPath, child, () => stderr);
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', (error: NodeJS.ErrnoException) => reject(error.code === 'ENOENT' ? new ShareFailed('--share needs unshare (util-linux), not found') : error));
      });
      await daemon.#waitForSocket();
      return daemon;
    } catch (error) {
      await daemon.close();
      throw error;
    }
  }

  async #waitForSocket(): Promise<void> {
    const deadline = Date.now() + SOCKET_WAIT_MS;
    while (!existsSync(this.socketPath)) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw this.#failure('ended at start');
      if (Date.now() > deadline) throw this.#failure(`no socket after ${SOCKET_WAIT_MS / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  #failure(what: string): ShareFailed {
    const detail = this.stderr().trim().split('\n').filter(Boolean).pop();
    return new ShareFailed(`--share ${this.share.hostDir}: virtiofsd ${what}${detail ? `: ${detail}` : ''}`, 'check that the directory exists and its owner can reach it (user namespaces must be enabled)');
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Ends virtiofsd (it also ends by itself when QEMU disconnects). */
  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const killer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await this.#exited;
    clearTimeout(killer);
  }

  /** Synchronous last resort at process exit. */
  killNow(): void {
    this.child.kill('SIGKILL');
  }
}
