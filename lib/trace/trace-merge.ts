// Merges several recorded boots of one image version into the trace to replay: a block is kept
// when at least half of the boots read it (so one odd boot can neither add its stray reads nor
// drop the common ones), in the consensus order of the median time at which those boots read it.
import { median } from '../base/median.js';
import type { BootTrace, TraceEntry } from './trace-format.js';

export function mergeTraces(recordings: readonly BootTrace[]): BootTrace {
  const newest = recordings.reduce((a, b) => (b.recordedAt > a.recordedAt ? b : a));
  if (recordings.length === 1) return newest;
  const times = new Map<number, number[]>();
  for (const recording of recordings) {
    for (const entry of recording.entries) {
      const seen = times.get(entry.block);
      if (seen) seen.push(entry.ms);
      else times.set(entry.block, [entry.ms]);
    }
  }
  const entries: TraceEntry[] = [];
  for (const [block, ms] of times) {
    if (ms.length * 2 < recordings.length) continue;
    entries.push({ block, ms: median(ms) });
  }
  entries.sort((a, b) => a.ms - b.ms || a.block - b.block);
  return {
    ...newest,
    storageReadyMs: medianOf(recordings.map((r) => r.storageReadyMs)),
    readyMs: medianOf(recordings.map((r) => r.readyMs)),
    entries,
  };
}

function medianOf(values: ReadonlyArray<number | undefined>): number | undefined {
  const known = values.filter((v): v is number => v !== undefined);
  return known.length === 0 ? undefined : median(known);
}
