// Commits the block map periodically while reads mark blocks present (durability rule 4 in
// lib/map/block-map.ts: the read path only sets bits in memory; they become durable here, on a
// flush, or on close).
import type { BlockMap } from '../map/block-map.js';

export interface MapCommitTimer {
  stop(): void;
}

export function startMapCommitTimer(map: BlockMap, intervalMs: number, log: (line: string) => void): MapCommitTimer {
  let stopped = false;
  const timer = setInterval(() => {
    if (map.hasUncommittedChanges && !stopped) map.commit().catch((error) => log(`map commit failed: ${(error as Error).message}`));
  }, intervalMs);
  timer.unref();
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
