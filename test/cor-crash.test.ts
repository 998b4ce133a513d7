// Crash safety: SIGKILL of a real `lazyboot disk serve --fill` process at random moments while
// qemu-io writes and flushes; after each kill the map and disk must satisfy the invariants.
// (The long version is scripts/stress-cor.)
import test from 'ava';
import { withDir } from 'tmp-promise';
import { runCrashIterations } from './cor-crash-harness.js';

test('SIGKILL during fill + flushed writes: present blocks match, flushed writes survive with W set', (t) => withDir(async ({ path: dir }) => {
  const result = await runCrashIterations({ dir, iterations: 20, blocks: 1024, fillRate: 2 * 1024 * 1024, log: (line) => t.log(line) });
  t.deepEqual(result.violations, []);
  t.true(result.iterations >= 15, `iterations: ${result.iterations}`);
  t.true(result.confirmedWrites > 0, 'some writes were flushed before a kill');
  t.true(result.uncertainBatches > 0, 'some kills hit a batch in flight');
  // The fill made progress across kills (resumed from the map) before the final full fill.
  t.true(result.presentAfterEachKill.at(-1)! > result.presentAfterEachKill[0]!);
}, { unsafeCleanup: true }));
