// Which of a map's targets (its sets of W bits) stands for a repository: shared by snapshot() and
// the replicator, so both ship to one repository against the same marks.
import { createHash } from 'node:crypto';
import type { BlockMap } from '../map/block-map.js';
import type { WriteTarget } from '../repo/write-target.js';

/**
 * The map's target label for this repository: the one bound to its URI; else `origin` when still
 * unbound and the repository holds the image this disk came from; else a new target whose W bits
 * start as every present block (it has received nothing of this disk yet). Adding a target
 * rewrites the map: only while no guest writes the disk (before its export serves anyone).
 */
export async function bindTarget(map: BlockMap, target: WriteTarget, canonical: string, log: (line: string) => void): Promise<string> {
  const header = map.header;
  const bound = header.targets.find((label) => map.shippingOf(label)?.uri === canonical);
  if (bound) return bound;
  const imageBytes = await target.manifest(header.image);
  const holdsImage = imageBytes !== undefined && sha256Hex(imageBytes) === header.manifestDigest;
  const baseline = holdsImage ? { baseline: { ref: header.image, manifestDigest: header.manifestDigest } } : {};
  const origin = header.targets[0]!;
  if (!map.shippingOf(origin) && holdsImage) {
    map.setShipping(origin, { uri: canonical, ...baseline });
    await map.commit();
    log(`target ${origin} is ${canonical}`);
    return origin;
  }
  const label = `target-${header.targets.length}`;
  await map.addTarget(label, map.present, { uri: canonical, ...baseline });
  log(`new target ${label} for ${canonical}: ${map.present.count()} present blocks to ship${holdsImage ? '' : ` (it does not hold ${header.image})`}`);
  return label;
}

export function sha256Hex(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}
