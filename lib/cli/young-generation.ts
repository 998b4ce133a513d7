// Keeps V8's young generation at its initial size in long-running disk processes (`disk serve`).
// Under steady allocation V8 doubles the young generation's semi-spaces up to 16 MiB each, and all of
// it becomes resident: a disk server serving a cold read measured +14..30 MiB of RSS for it, with no
// measurable gain in speed (its requests allocate little that lives long). Heap sizes are start-up
// flags, which `node bin/lazyboot.js ...` does not pass; the growth factor, however, is read at each
// growth, so setting it to 1 before the heap grows keeps the semi-spaces at their initial 1 MiB.
import { setFlagsFromString, getHeapSpaceStatistics } from 'node:v8';

export function keepYoungGenerationSmall(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}

/** Bytes reserved for the young generation now (for tests). */
export function youngGenerationBytes(): number {
  return getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0;
}
