// The fetch-ahead policy on its own (lib/cor/fetch-ahead.ts): what it plans, and that the unread
// bytes it allows never exceed BUDGET_FLOOR_BYTES + BUDGET_SHARE × demanded + the reader's streak
// credit (earned only by reading fetched-ahead data in a row: up to STREAK_CAP_BYTES, and a quarter
// of a long streak up to LONG_STREAK_WINDOWS windows), whatever the reads.
import test from 'ava';
import { BUDGET_FLOOR_BYTES, BUDGET_SHARE, LONG_STREAK_WINDOWS, STREAK_CAP_BYTES, FetchAhead, streakCreditBytes } from '../lib/cor/fetch-ahead.js';

const BS = 65536;

/** A policy over `blockCount` blocks (blocks listed in `zero` are all-zero), with a demand counter the test moves. */
function policy(blockCount: number, zero: ReadonlySet<number> = new Set(), sharers?: () => number) {
  let demanded = 0;
  const ahead = new FetchAhead({
    maxWindowBlocks: 128, maxRunBlocks: 64, blockCount, blockSize: BS,
    dataBytes: (b) => (zero.has(b) ? 0 : BS),
    demandedBytes: () => demanded,
    sharers,
  });
  const claimed = new Set<number>();
  const plan = (last: number) => {
    const run = ahead.plan(last, (b) => !claimed.has(b));
    if (run) for (let b = run[0]; b < run[1]; b++) claimed.add(b);
    return run;
  };
  return { ahead, plan, claimed, demand: (bytes: number) => { demanded += bytes; } };
}

test('with nothing demanded yet, one plan fetches at most the floor, and nothing more until reads pay for it', (t) => {
  const { plan } = policy(10_000);
  t.deepEqual(plan(0), [1, 1 + BUDGET_FLOOR_BYTES / BS]);
  t.is(plan(0), undefined, 'the budget is spent: no second window');
  t.is(plan(5000), undefined, 'not elsewhere either');
});

test('a reader that reads what was fetched ahead keeps a window in flight, topped up in large pieces', (t) => {
  const { ahead, plan, demand } = policy(10_000);
  plan(0);
  const fetched: Array<readonly [number, number]> = [];
  for (let block = 1; block < 3000; block++) {
    demand(BS);
    ahead.guestRead(block, block);
    const run = plan(block);
    if (run) fetched.push(run);
  }
  t.true(fetched.length > 20 && fetched.length < 200, `${fetched.length} pieces for 3000 blocks`);
  for (const [from, to] of fetched) t.true(to - from >= 2 && to - from <= 64);
  // Contiguous: no block planned twice, no gap left behind the reader.
  for (let i = 1; i < fetched.length; i++) t.is(fetched[i]![0], fetched[i - 1]![1]);
  t.true(ahead.counters.aheadFetchedBytes - ahead.counters.aheadReadBytes <= BUDGET_FLOOR_BYTES + BUDGET_SHARE * 2999 * BS + streakCreditBytes(2999 * BS, 128 * BS));
});

test('a long streak grows the window to a quarter of the streak, at most LONG_STREAK_WINDOWS windows; pieces stay a quarter of the base window', (t) => {
  const { ahead, plan, demand } = policy(20_000);
  plan(0);
  let mostUnread = 0;
  const unreadAt: number[] = [];
  for (let block = 1; block < 12_000; block++) {
    demand(BS);
    ahead.guestRead(block, block);
    const run = plan(block);
    if (run) t.true(run[1] - run[0] <= 32, `a piece of ${run[1] - run[0]} blocks`);
    const unread = ahead.counters.aheadFetchedBytes - ahead.counters.aheadReadBytes;
    mostUnread = Math.max(mostUnread, unread);
    // Past the first base window's worth of streak, what is unread is at most a quarter of the streak (+ one piece in the plan).
    if (block * BS > 4 * STREAK_CAP_BYTES && unread > block * BS / 4 + BUDGET_FLOOR_BYTES + BUDGET_SHARE * block * BS) t.fail(`unread ${unread} after a streak of ${block} blocks`);
    if (block === 500 || block === 2000 || block === 11_999) unreadAt.push(unread);
  }
  t.log(`unread ahead after 500, 2000, 12000 blocks read in a row: ${unreadAt.map((bytes) => (bytes / 2 ** 20).toFixed(1)).join(', ')} MiB`);
  t.true(unreadAt[0]! <= 128 * BS + 32 * BS, 'after 31 MiB in a row: about one window');
  t.true(unreadAt[2]! > 2 * 128 * BS, 'after 750 MiB in a row: grown past two windows');
  t.true(mostUnread <= LONG_STREAK_WINDOWS * 128 * BS + 32 * BS, `never beyond ${LONG_STREAK_WINDOWS} windows (most ${mostUnread})`);
});

test('a reader of files (4 MiB in a row, then a miss elsewhere) never earns the grown window', (t) => {
  const { ahead, plan, demand } = policy(100_000);
  let mostUnread = 0;
  for (let file = 0; file < 100; file++) {
    const start = file * 997;
    demand(BS);
    if (!ahead.guestRead(start, start)) ahead.missed();
    plan(start);
    for (let block = start + 1; block < start + 64; block++) {
      demand(BS);
      if (!ahead.guestRead(block, block)) ahead.missed();
      plan(block);
      mostUnread = Math.max(mostUnread, ahead.counters.aheadFetchedBytes - ahead.counters.aheadReadBytes);
    }
  }
  t.true(mostUnread <= BUDGET_FLOOR_BYTES + BUDGET_SHARE * 6400 * BS + STREAK_CAP_BYTES, `most unread ${mostUnread}: the base budget`);
});

test('a reader proven sequential gets its full window after a few MiB (streak credit), not after the ~60 MiB the demand share needs', (t) => {
  const { ahead, plan, demand } = policy(10_000);
  plan(0);
  let mostUnread = 0;
  for (let block = 1; block <= 160; block++) { // 10 MiB read
    demand(BS);
    ahead.guestRead(block, block);
    plan(block);
    mostUnread = Math.max(mostUnread, ahead.counters.aheadFetchedBytes - ahead.counters.aheadReadBytes);
  }
  const withoutStreak = BUDGET_FLOOR_BYTES + BUDGET_SHARE * 160 * BS; // 3 MiB
  t.true(mostUnread > withoutStreak + 3 * 2 ** 20, `at most ${mostUnread} bytes ahead in the first 10 MiB (${withoutStreak} without the streak credit)`);
  t.true(mostUnread <= 128 * BS, 'never beyond one window');
});

test('a miss ends the streak: nothing more is fetched ahead until the unread bytes are back under the rest of the budget', (t) => {
  const { ahead, plan, demand } = policy(10_000);
  plan(0);
  for (let block = 1; block <= 200; block++) {
    demand(BS);
    ahead.guestRead(block, block);
    plan(block);
  }
  const unread = ahead.counters.aheadFetchedBytes - ahead.counters.aheadReadBytes;
  const base = BUDGET_FLOOR_BYTES + BUDGET_SHARE * 200 * BS;
  t.true(unread > base, `${unread} unread ahead after a streak (base budget ${base})`);
  // The reader jumps elsewhere: a miss.
  demand(BS);
  t.false(ahead.guestRead(5000, 5000));
  ahead.missed();
  t.is(plan(5000), undefined, 'the streak credit is gone and the unread bytes exceed the rest of the budget');
  t.is(ahead.allowedBytes, base + BUDGET_SHARE * BS);
});

test('whatever the reads, unread fetched-ahead bytes stay within the budget', (t) => {
  const { ahead, plan, demand } = policy(20_000);
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  let demanded = 0;
  for (let i = 0; i < 5000; i++) {
    const block = Math.floor(random() * 19_990);
    if (random() < 0.5) {
      demand(BS);
      demanded += BS;
      // As the device does: a read that touches nothing fetched ahead is a miss.
      if (!ahead.guestRead(block, block)) ahead.missed();
    }
    plan(block);
    const unread = ahead.counters.aheadFetchedBytes - ahead.counters.aheadReadBytes;
    if (unread > BUDGET_FLOOR_BYTES + BUDGET_SHARE * demanded + STREAK_CAP_BYTES) t.fail(`unread ${unread} over the budget at step ${i}`);
    // A reader this random earns hardly any streak: a few blocks' worth at most.
    if (unread > BUDGET_FLOOR_BYTES + BUDGET_SHARE * demanded + 4 * BS) t.fail(`unread ${unread}: a random reader earned a streak at step ${i}`);
  }
  t.pass();
});

test('zero blocks cost nothing, trailing ones are left out, and a present block ends a piece', (t) => {
  const { ahead, plan, claimed, demand } = policy(1000, new Set([3, 4, 9, 10, 11]));
  demand(100 * BS);
  claimed.add(12);
  const run = plan(0);
  t.deepEqual(run, [1, 9], 'ends before the present block 12; the zero blocks 9-11 before it are dropped');
  t.is(ahead.counters.aheadFetchedBytes, 6 * BS, 'blocks 1, 2, 5, 6, 7, 8');
});

test('a failed fetch gives its budget back; an overwritten block stays spent and never counts as read', (t) => {
  const { ahead, plan } = policy(1000);
  const first = plan(0)!;
  ahead.failed(first[0], first[1]);
  t.is(ahead.counters.aheadFetchedBytes, 0);
  const again = plan(100)!;
  t.truthy(again, 'the budget came back');
  ahead.overwritten(again[0], again[0]);
  t.false(ahead.guestRead(again[0], again[0]), 'an overwritten block is not a hit');
  t.true(ahead.guestRead(again[0] + 1, again[0] + 1));
  t.is(ahead.counters.aheadReadBytes, BS);
});

test('devices fetching ahead through one host cache share one budget: each keeps its share of it, streak credit included', (t) => {
  let sharers = 4;
  const { ahead, plan, demand } = policy(10_000, new Set(), () => sharers);
  t.is(ahead.allowedBytes, BUDGET_FLOOR_BYTES / 4);
  t.deepEqual(plan(0), [1, 1 + BUDGET_FLOOR_BYTES / 4 / BS], 'a quarter of the floor');
  demand(40 * 1024 * 1024);
  t.is(ahead.allowedBytes, (BUDGET_FLOOR_BYTES + BUDGET_SHARE * 40 * 1024 * 1024) / 4);
  // Reading what was fetched ahead earns streak credit, shared like the rest.
  const streak = BUDGET_FLOOR_BYTES / 4;
  ahead.guestRead(1, streak / BS);
  t.is(ahead.allowedBytes, (BUDGET_FLOOR_BYTES + BUDGET_SHARE * 40 * 1024 * 1024 + streak) / 4);
  sharers = 1;
  t.is(ahead.allowedBytes, BUDGET_FLOOR_BYTES + BUDGET_SHARE * 40 * 1024 * 1024 + streak, 'alone again: the whole budget');
  sharers = 0;
  t.is(ahead.allowedBytes, BUDGET_FLOOR_BYTES + BUDGET_SHARE * 40 * 1024 * 1024 + streak, 'never more than one budget');
});
