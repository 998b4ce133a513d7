// FailoverBackend's back-off on a fake clock (the end-to-end test in cor-failover.test.ts runs on
// real time and real servers, where a loaded machine blurs the 1 s edges): a failing repository is
// backed off 1 s, doubling to 30 s; while backed off it is tried only after every healthy one; a
// success clears it; a read fails only when every repository failed, with each one's reason.
import test from 'ava';
import { FailoverBackend, type FailoverMember, type FetchErrorEvent } from '../lib/fetch/failover.js';
import { BlockError } from '../lib/block/backend.js';
import { MemoryBackend } from './helpers/memory-backend.js';

const BS = 4096;
const SIZE = 64 * 1024 * BS;

/** A repository whose reads fail while `failing` is set; it counts the reads it was asked for. */
function member(uri: string): { member: FailoverMember; state: { failing: boolean; reads: number } } {
  const data = new MemoryBackend(SIZE);
  const state = { failing: false, reads: 0 };
  const backend = Object.assign(Object.create(data) as MemoryBackend, {
    async read(offset: number, length: number): Promise<Buffer> {
      state.reads++;
      if (state.failing) throw new BlockError('EIO', `${uri} is down`);
      return data.read(offset, length);
    },
  });
  return { member: { uri, backend }, state };
}

function failover(members: FailoverMember[], clock: { now: number }, events: FetchErrorEvent[]): FailoverBackend {
  return new FailoverBackend(members, { blockSize: BS, stripeBlocks: 64, now: () => clock.now, onFetchError: (e) => events.push(e) });
}

test('a failing repository is backed off 1 s, doubling to 30 s, and a success clears it', async (t) => {
  const clock = { now: 0 };
  const events: FetchErrorEvent[] = [];
  const a = member('a');
  const b = member('b');
  const backend = failover([a.member, b.member], clock, events);
  a.state.failing = true;
  // Stripe 0 belongs to a: it fails, b serves.
  await backend.read(0, BS);
  t.deepEqual([a.state.reads, b.state.reads], [1, 1]);
  t.deepEqual(backend.health().map((h) => [h.uri, h.healthy, h.retryInMs]), [['a', false, 1000], ['b', true, 0]]);
  // Backed off: stripe 0 goes to b first, a is not asked.
  clock.now = 999;
  await backend.read(0, BS);
  t.deepEqual([a.state.reads, b.state.reads], [1, 2]);
  // Back-off over: a is tried again, fails again, the back-off doubles: 2 s, 4 s, ... capped at 30 s.
  const expected = [2000, 4000, 8000, 16000, 30000, 30000];
  for (const backoff of expected) {
    clock.now = backend.health()[0]!.retryInMs + clock.now;
    const before = a.state.reads;
    await backend.read(0, BS);
    t.is(a.state.reads, before + 1);
    t.is(backend.health()[0]!.retryInMs, backoff);
  }
  // a recovers: once its back-off ends, a success clears it for good.
  a.state.failing = false;
  clock.now += 30_000;
  await backend.read(0, BS);
  t.deepEqual(backend.health().map((h) => h.healthy), [true, true]);
  t.false(events.some((e) => e.final), 'no read failed: b served every one a could not');
  t.true(events.every((e) => e.uri === 'a' && e.error.message === 'a is down'));
});

test('when every repository fails, the read fails with each one\'s reason; a backed-off one is still tried last', async (t) => {
  const clock = { now: 0 };
  const events: FetchErrorEvent[] = [];
  const a = member('a');
  const b = member('b');
  const backend = failover([a.member, b.member], clock, events);
  a.state.failing = true;
  await backend.read(64 * BS, BS); // stripe 1 is b's: a is not asked
  t.is(a.state.reads, 0);
  await backend.read(0, BS); // a fails, b serves; a backed off
  b.state.failing = true;
  a.state.failing = false;
  // b fails; a, backed off, is tried anyway rather than failing the guest's read.
  const data = await backend.read(64 * BS, 2 * BS);
  t.is(data.length, 2 * BS);
  t.deepEqual([a.state.reads, b.state.reads], [2, 3]);
  a.state.failing = true;
  const error = await t.throwsAsync(backend.read(128 * BS, BS), { instanceOf: BlockError });
  t.regex(error!.message, /^blocks 128\.\.128: every repository failed \(.*a is down.*b is down.*\)$/);
  t.is(events.filter((e) => e.final).length, 1);
});

test('a speculative read that fails is reported as speculative', async (t) => {
  const events: FetchErrorEvent[] = [];
  const a = member('a');
  a.state.failing = true;
  const backend = failover([a.member], { now: 0 }, events);
  await t.throwsAsync(backend.readSpeculative(0, BS), { instanceOf: BlockError });
  t.true(events.length === 2 && events.every((e) => e.speculative === true));
  t.deepEqual(events.map((e) => e.final), [false, true]);
});
