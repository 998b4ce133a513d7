// The first half of a reboot pivot (`pivot: 'reboot'`): a transient QEMU boots the image on the
// copy-on-read device only until the guest's own storage driver has the disk, then is shut down.
// What that boot read is local now, so the native QEMU that boots the machine next (from the
// native graph, launch.ts) fetches nothing from the repository before its own storage-ready.
import { TransientVm, type StartVmOptions } from '../../vmm/vm.js';

/** Boots on `options.disk` (whose close must leave the COR device open) to storage-ready, then quits QEMU. Throws the VM's failure. */
export async function bootToStorageReady(options: StartVmOptions, log?: (line: string) => void): Promise<void> {
  const vm = await TransientVm.start({ ...options, requireStorageReady: true });
  try {
    await vm.storageReady;
    log?.(`reboot pivot: the transient boot reached storage-ready (${vm.storageReadySource}) at ${(vm.elapsedMs() / 1000).toFixed(1)} s; its QEMU (pid ${vm.pid}) is shut down, a native QEMU boots the machine`);
  } finally {
    await vm.close();
  }
}
