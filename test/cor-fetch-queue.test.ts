// The fetch queue merges queued adjacent runs into one upstream request; under a deep queue it
// holds new runs for the rest of the turn so that runs arriving together merge first.
import test from 'ava';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { FetchQueue } from '../lib/cor/fetch-queue.js';

/** A queue whose upstream requests are recorded and finished by hand. */
function recordingQueue(holdForTurn: boolean) {
  const requests: Array<{ start: number; count: number; finish(): void }> = [];
  const queue = new FetchQueue((start, count) => new Promise<void>((resolve) => requests.push({ start, count, finish: resolve })), {
    maxInFlight: 8, maxBlocks: 64, holdForTurn: () => holdForTurn,
  });
  return { queue, requests };
}

test('with a deep queue, runs queued in one turn while a fetch runs merge into one request', async (t) => {
  const { queue, requests } = recordingQueue(true);
  const first = queue.enqueue(0, 4, 'guest');
  t.deepEqual(requests.map((r) => [r.start, r.count]), [[0, 4]], 'nothing in flight: the first run goes at once');
  const later = [4, 8, 12, 16].map((start) => queue.enqueue(start, 4, 'guest'));
  t.is(requests.length, 1, 'held until the end of the turn');
  await nextTurn();
  t.deepEqual(requests.map((r) => [r.start, r.count]), [[0, 4], [4, 16]]);
  for (const request of requests) request.finish();
  await Promise.all([first, ...later]);
});

test('without a deep queue, each run takes a free slot at once (no wait for the turn)', async (t) => {
  const { queue, requests } = recordingQueue(false);
  const runs = [0, 4, 8].map((start) => queue.enqueue(start, 4, 'guest'));
  t.deepEqual(requests.map((r) => [r.start, r.count]), [[0, 4], [4, 4], [8, 4]]);
  for (const request of requests) request.finish();
  await Promise.all(runs);
});

test('when all slots are busy, queued neighbours merge up to the largest request, oldest first', async (t) => {
  const requests: Array<{ start: number; count: number; finish(): void }> = [];
  const queue = new FetchQueue((start, count) => new Promise<void>((resolve) => requests.push({ start, count, finish: resolve })), { maxInFlight: 1, maxBlocks: 8 });
  const runs = [0, 100, 104, 108, 112].map((start) => queue.enqueue(start, 4, 'guest'));
  t.deepEqual(requests.map((r) => [r.start, r.count]), [[0, 4]]);
  requests[0]!.finish();
  await nextTurn();
  t.deepEqual(requests.map((r) => [r.start, r.count]), [[0, 4], [100, 8]]);
  requests[1]!.finish();
  await nextTurn();
  t.deepEqual(requests.map((r) => [r.start, r.count]), [[0, 4], [100, 8], [108, 8]]);
  requests[2]!.finish();
  await Promise.all(runs);
});
