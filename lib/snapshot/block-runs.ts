// Runs of consecutive block indexes, so that the snapshot and the replicator read each run of
// marked blocks from the local disk in one call.

/** Runs of consecutive indexes in a sorted list, as [first, count]. */
export function* consecutiveRuns(indexes: readonly number[]): Generator<[number, number]> {
  let first = -1;
  let count = 0;
  for (const index of indexes) {
    if (count > 0 && index === first + count) {
      count++;
      continue;
    }
    if (count > 0) yield [first, count];
    first = index;
    count = 1;
  }
  if (count > 0) yield [first, count];
}
