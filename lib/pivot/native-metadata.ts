// The pivot's qcow2 metadata file for one disk, in two steps: made while the guest boots on
// (every L2 table written from the map's R bits as they are then), and finished while the guest is
// paused (only the blocks that became present since: a few entries, so the pause stays short).
import { stat } from 'node:fs/promises';
import { addPresentClusters, createQcow2Metadata, markPresentClusters } from '../../vmm/qcow2-metadata.js';

export interface PreparedMetadata {
  readonly path: string;
  readonly dataIsBlockDevice: boolean;
  /** Blocks marked present in the file so far. */
  readonly presentBlocks: number;
  /** Marks the blocks present now that were not at preparation; call with the COR device drained. */
  finish(isPresent: (block: number) => boolean): Promise<number>;
}

/** The metadata file beside the disk (`DISK.native.qcow2`), so a later boot of the same disk finds it. */
export function metadataPathOf(disk: string): string {
  return `${disk}.native.qcow2`;
}

export async function prepareMetadata(options: { disk: string; path: string; size: number; blockSize: number; isPresent: (block: number) => boolean }): Promise<PreparedMetadata> {
  const blockCount = Math.ceil(options.size / options.blockSize);
  await createQcow2Metadata({ path: options.path, dataFile: options.disk, size: options.size, clusterSize: options.blockSize });
  const presentAtPrepare = new Uint8Array(blockCount);
  const presentBlocks = await markPresentClusters(options.path, blockCount, (block) => {
    const present = options.isPresent(block);
    if (present) presentAtPrepare[block] = 1;
    return present;
  });
  return {
    path: options.path,
    dataIsBlockDevice: (await stat(options.disk)).isBlockDevice(),
    presentBlocks,
    async finish(isPresent) {
      const since: number[] = [];
      for (let block = 0; block < blockCount; block++) if (!presentAtPrepare[block] && isPresent(block)) since.push(block);
      await addPresentClusters(options.path, since);
      return since.length;
    },
  };
}
