// Whether a benchmark result still describes the code: each report records the commit it measured
// ("Code measured: COMMIT"), and a result is stale once the code it measures (its data path) has
// changed in a later commit. `node dist/scripts/bench-freshness.js` prints one line per result
// and exits 1 if any is stale; the benches call measuredCommit() when they write a report.
import { repositoryRoot } from '../fixtures/build.js';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

const ROOT = repositoryRoot();

/** Each result file and the code whose change makes it stale. */
export const MEASURED_CODE: Record<string, readonly string[]> = {
  'bench/results/nbd.md': ['lib/nbd', 'lib/repo', 'lib/block'],
  'bench/results/cor.md': ['lib/cor', 'lib/fetch', 'lib/map', 'lib/nbd', 'lib/repo', 'lib/block', 'lib/process-tuning.ts'],
  'bench/results/snapshot.md': ['lib/snapshot', 'lib/write', 'lib/repo', 'lib/map', 'lib/cor/local-disk.ts'],
  'bench/results/pivot.md': ['lib/pivot', 'lib/cor', 'lib/launch.ts', 'vmm'],
  'bench/results/boot.md': ['lib/cor', 'lib/fetch', 'lib/map', 'lib/nbd', 'lib/repo', 'lib/block', 'lib/process-tuning.ts', 'lib/launch.ts', 'vmm'],
  // The repository on S3 (lib/repo/storage), served (lib/nbd) or read straight (lib/fetch), booted with and without a trace.
  'bench/results/store.md': ['lib/repo', 'lib/fetch', 'lib/cor', 'lib/nbd', 'lib/block', 'lib/map', 'lib/trace', 'lib/process-tuning.ts', 'lib/launch.ts', 'vmm'],
};

/** "abc1234" for the checked-out commit, with a note when the measured code has uncommitted changes. */
export async function measuredCommit(): Promise<string> {
  const { stdout: commit } = await execa('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: ROOT });
  const { stdout: dirty } = await execa('git', ['status', '--porcelain', '--', 'lib', 'vmm', 'guest', 'scripts'], { cwd: ROOT });
  return dirty.trim() ? `${commit} + uncommitted changes` : commit;
}

export interface Freshness { readonly file: string; readonly measured?: string; readonly lastChange: string; readonly stale: boolean }

export async function freshnessOf(file: string): Promise<Freshness> {
  const text = await readFile(path.join(ROOT, file), 'utf8').catch(() => '');
  const measured = /Code measured: ([0-9a-f]{7,40})/.exec(text)?.[1];
  const { stdout: lastChange } = await execa('git', ['log', '-1', '--format=%h', '--', ...MEASURED_CODE[file]!], { cwd: ROOT });
  if (!measured || /uncommitted/.test(/Code measured: .*/.exec(text)?.[0] ?? '')) return { file, measured, lastChange, stale: true };
  // Fresh when the last change of the measured code is the measured commit or one of its ancestors.
  const ancestor = await execa('git', ['merge-base', '--is-ancestor', lastChange, measured], { cwd: ROOT, reject: false });
  return { file, measured, lastChange, stale: ancestor.exitCode !== 0 };
}

async function main(): Promise<void> {
  let stale = 0;
  for (const file of Object.keys(MEASURED_CODE)) {
    const result = await freshnessOf(file);
    if (result.stale) stale++;
    const state = result.stale ? 'STALE' : 'fresh';
    process.stdout.write(`${state}  ${file}: measured ${result.measured ?? '(no commit recorded)'}; its code last changed in ${result.lastChange}\n`);
  }
  process.exitCode = stale ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) void main();
