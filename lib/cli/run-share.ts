// `lazyboot run --share HOST_DIR:GUEST_DIR[:ro]`: the specs checked on the host before the boot,
// one virtiofsd per directory started before QEMU (vmm/virtiofs-share.ts) and owned here, and the
// mounts made in the guest through the agent once it answers (guest/share-script.ts).
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { registerCleanup } from '../base/cleanup.js';
import { LazybootError, UsageError } from '../base/errors.js';
import type { LazyVm } from '../launch.js';
import { findVirtiofsd, shareTag, VirtiofsDaemon, virtiofsArgs, type SharedDir } from '../../vmm/virtiofs-share.js';
import { MOUNT_SHARE } from '../../guest/share-script.js';

/** The guest cannot mount the share: its kernel has no virtiofs, or the mount failed. */
export class ShareMountFailed extends LazybootError {}

const EXAMPLE = 'write e.g. --share ./src:/src or --share ./out:/out:ro';

export function parseShare(spec: string): SharedDir {
  const parts = spec.split(':');
  const readOnly = parts.length === 3 && parts[2] === 'ro';
  if (parts.length < 2 || parts.length > 3 || (parts.length === 3 && !readOnly) || !parts[0] || !parts[1]) {
    throw new UsageError(`--share ${JSON.stringify(spec)} is not HOST_DIR:GUEST_DIR[:ro]`, EXAMPLE);
  }
  const [hostDir, guestDir] = [path.resolve(parts[0]), parts[1]];
  if (!existsSync(hostDir) || !statSync(hostDir).isDirectory()) throw new UsageError(`--share: ${parts[0]} is not a directory on the host`, 'give an existing directory');
  if (!guestDir.startsWith('/') || guestDir === '/') throw new UsageError(`--share ${JSON.stringify(spec)}: the guest directory ${guestDir} is not an absolute path below /`, EXAMPLE);
  return { hostDir, guestDir, readOnly };
}

export interface RunShares {
  readonly shares: readonly SharedDir[];
  readonly qemuArgs: readonly string[];
  /** Ends every virtiofsd and removes their sockets' dir (idempotent). */
  close(): Promise<void>;
}

/** Starts one virtiofsd per share (before QEMU: it connects to their sockets at start). */
export async function startShares(shares: readonly SharedDir[], memoryMiB: number): Promise<RunShares> {
  if (shares.length === 0) return { shares, qemuArgs: [], close: async () => {} };
  findVirtiofsd(); // a missing virtiofsd is one line before anything starts
  const dir = await mkdtemp(path.join(tmpdir(), 'lazyboot-share-'));
  await chmod(dir, 0o711); // each virtiofsd runs as its directory's owner and must reach its socket's dir
  const daemons: VirtiofsDaemon[] = [];
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await Promise.all(daemons.map((daemon) => daemon.close()));
      await rm(dir, { recursive: true, force: true });
      unregister();
    })());
  const unregister = registerCleanup({ release: close, releaseSync: () => daemons.forEach((daemon) => daemon.killNow()) });
  try {
    for (const [index, share] of shares.entries()) daemons.push(await VirtiofsDaemon.start(share, path.join(dir, `fs${index}`, 'virtiofsd.sock')));
    return { shares, qemuArgs: virtiofsArgs(daemons.map((daemon) => daemon.socketPath), memoryMiB), close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** Mounts every share in the guest; returns one line per share. Throws ShareMountFailed. */
export async function mountShares(vm: LazyVm, shares: readonly SharedDir[]): Promise<string[]> {
  const done: string[] = [];
  for (const [index, share] of shares.entries()) {
    const result = await vm.exec('/bin/sh', ['-c', MOUNT_SHARE, 'lazyboot-share', shareTag(index), share.guestDir, share.readOnly ? '1' : '0']);
    const said = result.stdout.trim().split('\n').pop() ?? '';
    if (result.exitCode === 2 && said.startsWith('no-virtiofs')) {
      const has9p = said.includes('9p');
      throw new ShareMountFailed(
        `--share: the guest kernel has no virtiofs${has9p ? ' (it has 9p, which lazyboot does not offer)' : ' and no 9p'}: it cannot mount ${share.hostDir}`,
        'use a kernel with CONFIG_VIRTIO_FS (Debian: any linux-image), or --copy-in/--copy-out',
      );
    }
    if (result.exitCode !== 0) throw new ShareMountFailed(`--share: mounting ${share.hostDir} on ${share.guestDir} in the guest failed: ${said || result.stderr.trim() || `exit ${result.exitCode}`}`);
    done.push(`${share.hostDir} on ${share.guestDir} (virtiofs${share.readOnly ? ', read-only' : ''})`);
  }
  return done;
}
