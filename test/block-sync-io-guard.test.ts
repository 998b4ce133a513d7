// SyncIoGuard's policy with a fake clock: one slow call (a thread preempted mid-copy) keeps
// synchronous I/O; two in a row refuse it for a while; a probe after the refusal decides whether
// the wait doubles or synchronous I/O comes back.
import test from 'ava';
import { SyncIoGuard } from '../lib/block/sync-io-guard.js';

const SLOW_NS = 500_000n;

/** A guard whose calls take as long as the test says, on a clock the test moves. */
function guarded() {
  let nowMs = 1_000;
  let hr = 0n;
  const guard = new SyncIoGuard(SLOW_NS, { now: () => nowMs, hrtime: () => hr });
  /** A call taking `tookNs`: 'sync' if the guard ran it, 'async' if it refused. */
  const call = (tookNs: bigint): 'sync' | 'async' => guard.run(() => { hr += tookNs; return 'sync' as const; }) ?? 'async';
  return { call, advance: (ms: number) => { nowMs += ms; } };
}

const FAST = 50_000n;
const SLOW = 2_000_000n;

test('one slow call among fast ones keeps synchronous I/O', (t) => {
  const { call } = guarded();
  t.deepEqual([call(FAST), call(SLOW), call(FAST), call(SLOW), call(FAST)], ['sync', 'sync', 'sync', 'sync', 'sync']);
});

test('two slow calls in a row refuse synchronous I/O for 100 ms; a fast probe then restores it', (t) => {
  const { call, advance } = guarded();
  t.is(call(SLOW), 'sync');
  t.is(call(SLOW), 'sync', 'the second slow call runs (it is what trips the guard)');
  t.is(call(FAST), 'async');
  advance(99);
  t.is(call(FAST), 'async');
  advance(1);
  t.is(call(FAST), 'sync', 'the probe after 100 ms');
  t.is(call(SLOW), 'sync', 'after a fast probe, one slow call is again not enough');
  t.is(call(FAST), 'sync');
});

test('a slow probe trips at once and doubles the wait, up to 2 s; a fast call resets it', (t) => {
  const { call, advance } = guarded();
  call(SLOW);
  call(SLOW);
  const waits: number[] = [];
  for (let i = 0; i < 7; i++) {
    let waited = 0;
    while (call(SLOW) === 'async') { advance(10); waited += 10; }
    waits.push(waited);
  }
  // Each loop ends on the slow probe that ran (and tripped again): the refusal before it is measured.
  t.deepEqual(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
  while (call(FAST) === 'async') advance(10);
  call(SLOW);
  call(SLOW);
  let waited = 0;
  while (call(FAST) === 'async') { advance(10); waited += 10; }
  t.is(waited, 100, 'back to the first wait after a fast call');
});
