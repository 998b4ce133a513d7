// Shared fetch buffers: memory comes back to the pool only when its last hold is released, so a
// fetch-ahead run taken by a guest read is never reused while either of them still uses it.
import test from 'ava';
import { COPY_SHIFT_BYTES } from '../lib/base/copy-buffer.js';
import { acquireShared, releaseShared, retainShared } from '../lib/fetch/shared-buffers.js';

const KIB = 1024;

test('released memory is reused by the next acquire of its size class', (t) => {
  const first = acquireShared(100 * KIB);
  t.is(first.length, 100 * KIB);
  t.true(first.buffer instanceof SharedArrayBuffer);
  // The size class, and the view starts past the page boundary (copies at full speed: copy-buffer.ts).
  t.is(first.buffer.byteLength, 128 * KIB + COPY_SHIFT_BYTES);
  t.is(first.byteOffset, COPY_SHIFT_BYTES);
  releaseShared(first);
  const second = acquireShared(120 * KIB);
  t.is(second.buffer, first.buffer);
  t.not(acquireShared(120 * KIB).buffer, first.buffer, 'memory in use is not handed out twice');
  releaseShared(second);
});

test('memory with a second hold is reused only after both are released', (t) => {
  const run = acquireShared(256 * KIB);
  const taken = run.subarray(64 * KIB, 128 * KIB);
  retainShared(taken);
  releaseShared(run); // the run is dropped; the taker still writes its part
  const other = acquireShared(256 * KIB);
  t.not(other.buffer, run.buffer);
  releaseShared(taken);
  t.is(acquireShared(256 * KIB).buffer, run.buffer);
  releaseShared(other);
});

test('a second release of memory already back in the pool is ignored', (t) => {
  const buffer = acquireShared(512 * KIB);
  releaseShared(buffer);
  releaseShared(buffer);
  const a = acquireShared(512 * KIB);
  const b = acquireShared(512 * KIB);
  t.is(a.buffer, buffer.buffer);
  t.not(b.buffer, buffer.buffer);
});

test('runs larger than the largest class get memory of their own, never pooled', (t) => {
  const big = acquireShared(9 * 1024 * KIB);
  t.is(big.buffer.byteLength, 9 * 1024 * KIB + COPY_SHIFT_BYTES);
  t.is(big.length, 9 * 1024 * KIB);
  releaseShared(big);
  t.not(acquireShared(9 * 1024 * KIB).buffer, big.buffer);
});
