// A pivot whose end was never recorded: lazyboot (or the machine) died while QEMU owned the disk,
// so the map lacks what QEMU wrote. Left behind is the metadata file beside the disk (it is
// removed only after its fold); its allocation and, if QEMU quit cleanly, its writes bitmap (else
// the manifest's digests) are folded into the map before anything else opens the disk — or the
// next COR device would fetch image blocks over the guest's writes.
import { access, rm } from 'node:fs/promises';
import type { Manifest } from '../repo/manifest-format.js';
import { foldNativeIntoMap, type FoldResult } from './fold-native.js';
import { metadataPathOf } from './native-metadata.js';

/**
 * Folds a left-behind metadata file of `disk` into its map, then removes it. `manifestOf` opens the
 * disk once (checking it belongs to the image and nobody holds it) and closes it again.
 */
export async function recoverInterruptedPivot(disk: string, manifestOf: () => Promise<Manifest>): Promise<FoldResult | undefined> {
  const metadataPath = metadataPathOf(disk);
  if (!(await access(metadataPath).then(() => true, () => false))) return undefined;
  const manifest = await manifestOf();
  const folded = await foldNativeIntoMap({ disk, metadataPath, manifest });
  await rm(metadataPath, { force: true });
  return folded;
}
