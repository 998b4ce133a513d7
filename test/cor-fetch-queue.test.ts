// The fetch queue merges queued adjacent runs into one upstream request: runs queued together go
// out as one, and under a deep queue new runs wait for the end of the turn so that runs arriving
// together merge first.
import test from 'ava';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { FetchQueue } from '../lib/cor/fetch-queue.js';

interface Recorded { readonly start: number; readonly count: number; readonly speculative: boolean; finish(): void }

/** A queue whose upstream requests are recorded and finished by hand. */
function recordingQueue(options: { holdForTurn?: boolean; maxInFlight?: number; maxBlocks?: number } = {}) {
  const requests: Recorded[] = [];
  const queue = new FetchQueue((start, count, speculative) => new Promise<void>((resolve) => requests.push({ start, count, speculative, finish: resolve })), {
    maxInFlight: options.maxInFlight ?? 8, maxBlocks: options.maxBlocks ?? 64, holdForTurn: () => options.holdForTurn ?? false,
  });
  const sent = () => requests.map((r) => [r.start, r.count]);
  return { queue, requests, sent };
}

test('runs queued together go out as one request, across a bridgeable gap', async (t) => {
  const requests: Recorded[] = [];
  const queue = new FetchQueue((start, count, speculative) => new Promise<void>((resolve) => requests.push({ start, count, speculative, finish: resolve })), {
    maxInFlight: 8, maxBlocks: 64, bridgeable: (block) => block === 9,
  });
  const runs = queue.together(() => [queue.enqueue(8, 1, 'guest'), queue.enqueue(10, 2, 'guest')]);
  t.deepEqual(requests.map((r) => [r.start, r.count]), [[8, 4]]);
  // Outside together(), a run takes a free slot at once, while the first still runs.
  const later = queue.enqueue(40, 2, 'guest');
  t.deepEqual(requests.map((r) => [r.start, r.count]), [[8, 4], [40, 2]]);
  for (const request of requests) request.finish();
  await Promise.all([...runs, later]);
});

test('with a deep queue, runs queued over one turn while a fetch runs merge into one request', async (t) => {
  const { queue, requests, sent } = recordingQueue({ holdForTurn: true });
  const first = queue.enqueue(0, 4, 'guest');
  t.deepEqual(sent(), [[0, 4]], 'nothing in flight: the first run goes at once');
  const later = [4, 8, 12].map((start) => queue.enqueue(start, 4, 'guest'));
  t.is(requests.length, 1, 'held until the end of the turn');
  await nextTurn();
  t.deepEqual(sent(), [[0, 4], [4, 12]]);
  for (const request of requests) request.finish();
  await Promise.all([first, ...later]);
});

test('when all slots are busy, queued neighbours merge up to the largest request, oldest first', async (t) => {
  const { queue, requests, sent } = recordingQueue({ maxInFlight: 1, maxBlocks: 8 });
  const runs = [0, 100, 104, 108, 112].map((start) => queue.enqueue(start, 4, 'guest'));
  t.deepEqual(sent(), [[0, 4]]);
  requests[0]!.finish();
  await nextTurn();
  t.deepEqual(sent(), [[0, 4], [100, 8]]);
  requests[1]!.finish();
  await nextTurn();
  t.deepEqual(sent(), [[0, 4], [100, 8], [108, 8]]);
  requests[2]!.finish();
  await Promise.all(runs);
});

test('guest runs go before runs fetched ahead, and a run ahead that a guest waits for is promoted', async (t) => {
  const { queue, requests, sent } = recordingQueue({ maxInFlight: 1 });
  const busy = queue.enqueue(0, 1, 'guest');
  const aheadFar = queue.enqueue(200, 8, 'ahead');
  const aheadNear = queue.enqueue(100, 8, 'ahead');
  const background = queue.enqueue(300, 1, 'background');
  const guest = queue.enqueue(50, 1, 'guest');
  queue.promote(104);
  const order: Array<[number, number]> = [[0, 1], [50, 1], [100, 8], [200, 8], [300, 1]];
  for (let i = 1; i < order.length; i++) {
    requests[i - 1]!.finish();
    await nextTurn();
    t.deepEqual(sent(), order.slice(0, i + 1));
  }
  requests[4]!.finish();
  await Promise.all([busy, aheadFar, aheadNear, background, guest]);
  t.deepEqual(requests.map((r) => r.speculative), [false, false, false, true, false], 'only a batch of runs ahead alone is speculative');
});
