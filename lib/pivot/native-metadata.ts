// The pivot's qcow2 metadata file for one disk, in two steps: made while the guest boots on
// (every L2 table written from what the local disk holds then), and finished while the guest is
// paused (only the blocks that became present since: a few entries, so the pause stays short).
// "Holds" includes the image's zero blocks that are still holes, not only present blocks: a guest
// writing into free space after the pivot then writes straight to the raw disk, where an
// unallocated cluster costs a qcow2 allocation and a copy-on-write read from the backing (the COR
// device over NBD). Measured with qemu-img bench, 256 MiB of 1 MiB writes off cluster alignment:
// 1.3-1.6 s into unallocated clusters over an NBD backing, 0.25-0.5 s into mapped ones (raw file
// alone 0.25 s); bench-pivot's guest dd wrote at 0.35-0.39x the plain disk after the pivot.
import { stat } from 'node:fs/promises';
import { addPresentClusters, createQcow2Metadata, markPresentClusters } from '../../vmm/qcow2-metadata.js';

export interface PreparedMetadata {
  readonly path: string;
  readonly dataIsBlockDevice: boolean;
  /** Blocks the file maps to the local disk so far. */
  readonly presentBlocks: number;
  /** Maps the blocks local now that were not at preparation; call with the COR device drained. */
  finish(isLocal: (block: number) => boolean): Promise<number>;
}

/** The metadata file beside the disk (`DISK.native.qcow2`), so a later boot of the same disk finds it. */
export function metadataPathOf(disk: string): string {
  return `${disk}.native.qcow2`;
}

export async function prepareMetadata(options: { disk: string; path: string; size: number; blockSize: number; isLocal: (block: number) => boolean }): Promise<PreparedMetadata> {
  const blockCount = Math.ceil(options.size / options.blockSize);
  await createQcow2Metadata({ path: options.path, dataFile: options.disk, size: options.size, clusterSize: options.blockSize });
  const localAtPrepare = new Uint8Array(blockCount);
  const presentBlocks = await markPresentClusters(options.path, blockCount, (block) => {
    const local = options.isLocal(block);
    if (local) localAtPrepare[block] = 1;
    return local;
  });
  return {
    path: options.path,
    dataIsBlockDevice: (await stat(options.disk)).isBlockDevice(),
    presentBlocks,
    async finish(isLocal) {
      const since: number[] = [];
      for (let block = 0; block < blockCount; block++) if (!localAtPrepare[block] && isLocal(block)) since.push(block);
      await addPresentClusters(options.path, since);
      return since.length;
    },
  };
}
