// Reading one of QEMU's dirty bitmaps from outside QEMU: an NBD export that carries it as the
// `qemu:dirty-bitmap:NAME` meta context is mapped with `qemu-img map` (which reports the dirty
// ranges inverted, as `data: false`). Used by the fold after a pivot (the persistent writes bitmap,
// through qemu-nbd on the metadata file) and by the live snapshot after a pivot (its frozen bitmap,
// through QEMU's own NBD server).
import { execa } from 'execa';
import { Bitset } from '../map/bitset.js';

export interface MapEntry {
  readonly start: number;
  readonly length: number;
  readonly depth: number;
  readonly present: boolean;
  readonly data: boolean;
}

/** Byte ranges → inclusive block ranges (partial blocks count). */
export function* blocksOf(entries: readonly MapEntry[], blockSize: number, wanted: (entry: MapEntry) => boolean): Generator<[number, number]> {
  for (const entry of entries) {
    if (!wanted(entry) || entry.length === 0) continue;
    yield [Math.floor(entry.start / blockSize), Math.floor((entry.start + entry.length - 1) / blockSize)];
  }
}

export async function qemuImgMap(args: string[]): Promise<MapEntry[]> {
  // Own process group (detached): a terminal's Ctrl-C reaches lazyboot, which finishes its work.
  const result = await execa('qemu-img', ['map', '--output=json', ...args], { detached: true });
  return JSON.parse(result.stdout) as MapEntry[];
}

/** The dirty byte ranges of `bitmap` as an NBD server on a unix socket exports it. */
export async function dirtyRangesOverNbd(socketPath: string, exportName: string, bitmap: string): Promise<MapEntry[]> {
  const exportOption = exportName === '' ? '' : `,export=${exportName}`;
  const entries = await qemuImgMap(['--image-opts', `driver=nbd,server.type=unix,server.path=${socketPath}${exportOption},x-dirty-bitmap=qemu:dirty-bitmap:${bitmap}`]);
  return entries.filter((entry) => !entry.data);
}

/** The same as a set of blocks (a block with any dirty byte is dirty). */
export async function dirtyBlocksOverNbd(socketPath: string, exportName: string, bitmap: string, geometry: { readonly blockSize: number; readonly blockCount: number }): Promise<Bitset> {
  const blocks = new Bitset(geometry.blockCount);
  for (const [first, last] of blocksOf(await dirtyRangesOverNbd(socketPath, exportName, bitmap), geometry.blockSize, () => true)) blocks.setRange(first, last - first + 1);
  return blocks;
}
