// Readiness without our hook: the guest's own storage driver is up when the agent reports `/`
// mounted on a disk whose bus is virtio, scsi or nvme (guest-get-fsinfo). Works on any image
// that runs qemu-guest-agent.
import { setTimeout as sleep } from 'node:timers/promises';
import type { GuestAgent } from './agent-client.js';
import type { AgentDiskAddress, AgentFilesystem } from './agent-protocol.js';
import { AgentTimeout, NativeStorageTimeout } from './errors.js';

export const NATIVE_BUS_TYPES: readonly string[] = ['virtio', 'scsi', 'nvme'];

export interface NativeRoot {
  /** The root filesystem as the agent reports it (device name, type, sizes). */
  readonly filesystem: AgentFilesystem;
  /** The disk under it, on a native bus. */
  readonly disk: AgentDiskAddress;
}

/** Finds `/` on a native-bus disk in a guest-get-fsinfo reply, or undefined. */
export function nativeRoot(filesystems: readonly AgentFilesystem[]): NativeRoot | undefined {
  const root = filesystems.find((filesystem) => filesystem.mountpoint === '/');
  const disk = root?.disk.find((address) => NATIVE_BUS_TYPES.includes(address['bus-type']));
  return root && disk ? { filesystem: root, disk } : undefined;
}

function describeRoot(filesystems: readonly AgentFilesystem[]): string {
  const root = filesystems.find((filesystem) => filesystem.mountpoint === '/');
  if (!root) return 'no / in guest-get-fsinfo';
  const buses = root.disk.map((address) => address['bus-type']).join(',') || 'no disk';
  return `/ is ${root.name} (${root.type}) on ${buses}`;
}

export interface NativeStorageWaitOptions {
  readonly timeoutMs: number;
  readonly pollMs?: number;
  readonly signal?: AbortSignal;
}

/** Polls guest-get-fsinfo until `/` is on a native-bus disk. Throws NativeStorageTimeout. */
export async function waitForNativeStorage(agent: GuestAgent, options: NativeStorageWaitOptions): Promise<NativeRoot> {
  const deadline = Date.now() + options.timeoutMs;
  let lastSeen = 'no answer yet';
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      const filesystems = await agent.fsinfo();
      const root = nativeRoot(filesystems);
      if (root) return root;
      lastSeen = describeRoot(filesystems);
    } catch (error) {
      if (!(error instanceof AgentTimeout)) throw error;
      lastSeen = error.message;
    }
    if (Date.now() >= deadline) throw new NativeStorageTimeout(options.timeoutMs, lastSeen);
    await sleep(Math.min(options.pollMs ?? 500, Math.max(0, deadline - Date.now())), undefined, { signal: options.signal });
  }
}
