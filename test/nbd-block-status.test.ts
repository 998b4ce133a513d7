// The base:allocation descriptors one reply carries (lib/nbd/block-status.ts): exact for clients
// that take a list, and for REQ_ONE clients (QEMU) one descriptor grown over short holes when the
// backend asks for it, never over a long hole or zero run.
import test from 'ava';
import { statusDescriptors } from '../lib/nbd/block-status.js';
import * as P from '../lib/nbd/protocol.js';
import type { Extent } from '../lib/block/backend.js';

const K = 1024;
const HOLE = P.STATE_HOLE | P.STATE_ZERO;

/** Extents laid end to end from offset 0: [length, 'data' | 'hole' | 'zero']. */
function extents(...parts: Array<[number, 'data' | 'hole' | 'zero']>): Extent[] {
  let at = 0;
  return parts.map(([length, kind]) => {
    const extent = { offset: at, length, hole: kind === 'hole', zero: kind !== 'data' };
    at += length;
    return extent;
  });
}

const alternating = extents([64 * K, 'data'], [64 * K, 'hole'], [192 * K, 'data'], [64 * K, 'hole'], [192 * K, 'data'], [2048 * K, 'hole'], [64 * K, 'data']);
const whole = { offset: 0, length: 64 * 1024 * K, flags: 0 };
const one = { ...whole, flags: P.CMD_FLAG_REQ_ONE };

test('a list client gets every extent exactly, coalescing or not', (t) => {
  const exact = statusDescriptors(whole, alternating, 1024 * K);
  t.deepEqual(exact.map((d) => [d.length / K, d.flags]), [[64, 0], [64, HOLE], [192, 0], [64, HOLE], [192, 0], [2048, HOLE], [64, 0]]);
});

test('REQ_ONE without coalescing: the first extent only', (t) => {
  t.deepEqual(statusDescriptors(one, alternating), [{ length: 64 * K, flags: 0 }]);
  t.deepEqual(statusDescriptors(one, alternating, 0), [{ length: 64 * K, flags: 0 }]);
});

test('REQ_ONE with coalescing: short holes are taken into the data, up to the first long hole', (t) => {
  t.deepEqual(statusDescriptors(one, alternating, 1024 * K), [{ length: (64 + 64 + 192 + 64 + 192) * K, flags: 0 }]);
});

test('REQ_ONE at a long hole: the hole alone, not merged with the data after it', (t) => {
  const from = (64 + 64 + 192 + 64 + 192) * K;
  const rest = alternating.slice(5);
  t.deepEqual(statusDescriptors({ offset: from, length: 8 * 1024 * K, flags: P.CMD_FLAG_REQ_ONE }, rest, 1024 * K), [{ length: 2048 * K, flags: HOLE }]);
});

test('REQ_ONE starting at a short hole: reported as data together with what follows', (t) => {
  const shortFirst = extents([64 * K, 'hole'], [192 * K, 'data'], [64 * K, 'zero'], [128 * K, 'data']);
  t.deepEqual(statusDescriptors(one, shortFirst, 1024 * K), [{ length: 448 * K, flags: 0 }]);
});

test('REQ_ONE: holes next to each other keep the flags they share (a hole then a zero run is zero)', (t) => {
  const holes = extents([64 * K, 'hole'], [64 * K, 'zero'], [4096 * K, 'data']);
  // A hole then a zero run: zero (both are) but not a hole. Long data after them: the short runs
  // lose their flags to it (they are short), the long data loses nothing.
  t.deepEqual(statusDescriptors(one, holes, 1024 * K), [{ length: (128 + 4096) * K, flags: 0 }]);
  t.deepEqual(statusDescriptors(one, holes.slice(0, 2), 1024 * K), [{ length: 128 * K, flags: P.STATE_ZERO }]);
});

test('REQ_ONE: a long zero run after short holes ends the descriptor before it', (t) => {
  const list = extents([64 * K, 'hole'], [64 * K, 'data'], [1024 * K, 'zero'], [64 * K, 'data']);
  t.deepEqual(statusDescriptors(one, list, 1024 * K), [{ length: 128 * K, flags: 0 }]);
});

test('REQ_ONE: clipped to the request, and extents that do not start at the offset give nothing', (t) => {
  t.deepEqual(statusDescriptors({ offset: 0, length: 100 * K, flags: P.CMD_FLAG_REQ_ONE }, alternating, 1024 * K), [{ length: 100 * K, flags: 0 }]);
  const later = alternating.map((extent) => ({ ...extent, offset: extent.offset + 8 * K }));
  t.deepEqual(statusDescriptors({ offset: 0, length: 100 * K, flags: P.CMD_FLAG_REQ_ONE }, later, 1024 * K), []);
});
