// The live pivot of a launched VM, end to end: once the guest's own storage driver has the disk,
// make the qcow2 metadata file from the map (the guest boots on meanwhile), then pause the guest,
// switch the COR device to read-through (the single-writer rule), finish the metadata, swap the
// device's drive to QEMU's native graph and resume (TransientVm.pivot, vmm/native-graph.ts).
import type { CorDevice } from '../cor/device.js';
import type { TransientVm } from '../../vmm/vm.js';
import type { LivePivotResult } from '../../vmm/native-graph.js';
import { prepareMetadata } from './native-metadata.js';

export interface PivotOutcome extends LivePivotResult {
  /**
   * live: the running guest's disk was swapped (pauseMs measured); reboot: the transient QEMU was
   * shut down at storage-ready and a native QEMU booted the machine; resume: a pivot interrupted
   * earlier (QEMU killed) was taken up again by booting natively (pauseMs 0 for both).
   */
  readonly how: 'live' | 'reboot' | 'resume';
  /** A native boot (reboot, resume): bytes the repository served from QEMU's start to the guest's storage-ready. */
  readonly fetchedBeforeStorageReady?: number;
  /** Blocks the metadata file maps to the local disk (present at the pivot, or zero blocks still holes). */
  readonly presentBlocks: number;
}

export async function pivotWhenStorageReady(vm: TransientVm, device: CorDevice, disk: string, metadataPath: string): Promise<Omit<PivotOutcome, 'how'>> {
  await vm.storageReady;
  const { size, blockSize } = device.manifest;
  const prepared = await prepareMetadata({ disk, path: metadataPath, size, blockSize, isLocal: device.heldLocally });
  let presentBlocks = prepared.presentBlocks;
  const result = await vm.pivot(
    { metadataPath, dataPath: disk, dataIsBlockDevice: prepared.dataIsBlockDevice, blockSize, backing: { socketPath: device.socketPath, exportName: device.exportName } },
    async () => {
      await device.enterReadThrough();
      presentBlocks += await prepared.finish(device.heldLocally);
    },
  );
  return { ...result, presentBlocks };
}
