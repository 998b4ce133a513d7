// The median of a list of numbers: the middle value, or the mean of the two middle ones. One home
// for the boot trace's consensus (lib/trace/trace-merge.ts) and the benchmarks' figures.
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('the median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
