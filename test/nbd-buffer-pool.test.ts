// The reply buffer pool: reuse by size class, bounded, a size switch evicts the old size, and the
// byte budget makes takers wait (first come, first served) instead of allocating without limit.
import test from 'ava';
import { COPY_SHIFT_BYTES } from '../lib/base/copy-buffer.js';
import { BufferPool } from '../lib/nbd/buffer-pool.js';

const KIB = 1024;

test('buffers are reused by power-of-two size class', async (t) => {
  const pool = new BufferPool({ maxPooledBytes: 1024 * KIB });
  const first = await pool.take(5000);
  t.is(first.length, 8192);
  pool.give(first);
  t.is(await pool.take(8000), first);
  t.not(await pool.take(8000), first, 'a taken buffer is not handed out twice');
});

test('a buffer starts past the page boundary (pread and socket copies run at full speed: copy-buffer.ts)', async (t) => {
  const pool = new BufferPool();
  for (const length of [4096, 256 * KIB, 2048 * KIB]) {
    const buffer = await pool.take(length);
    t.is(buffer.length, length);
    t.is(buffer.byteOffset % 4096, COPY_SHIFT_BYTES, `${length} bytes`);
    t.true(buffer.buffer.byteLength >= length + COPY_SHIFT_BYTES);
    pool.give(buffer);
  }
});

test('the pool stays within its bound and gives way to a new size', async (t) => {
  const pool = new BufferPool({ maxPooledBytes: 64 * KIB });
  const small = await Promise.all(Array.from({ length: 16 }, () => pool.take(4096)));
  for (const buffer of small) pool.give(buffer); // fills the pool with 4 KiB buffers
  const big = await pool.take(32 * KIB);
  pool.give(big);
  t.is(await pool.take(32 * KIB), big, 'the 32 KiB buffer was kept, 4 KiB ones evicted');
  const huge = await pool.take(128 * KIB);
  pool.give(huge);
  t.not(await pool.take(128 * KIB), huge, 'larger than the whole pool: not kept');
});

test('takers beyond the budget wait for buffers to come back, in order', async (t) => {
  const pool = new BufferPool({ budgetBytes: 64 * KIB });
  const held = [await pool.take(32 * KIB), await pool.take(32 * KIB)];
  const order: string[] = [];
  const big = pool.take(64 * KIB).then((buffer) => { order.push('big'); return buffer; });
  const small = pool.take(4 * KIB).then((buffer) => { order.push('small'); return buffer; });
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.deepEqual(order, [], 'nothing fits while 64 KiB are out');
  pool.give(held[0]!);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.deepEqual(order, [], 'the small taker does not overtake the big one');
  pool.abandon(held[1]!); // an abandoned buffer also returns its share
  t.is((await big).length, 64 * KIB);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.deepEqual(order, ['big'], 'the big buffer fills the budget alone');
  pool.give(await big);
  t.is((await small).length, 4 * KIB);
  t.deepEqual(order, ['big', 'small']);
});

test('one request larger than the whole budget is served alone', async (t) => {
  const pool = new BufferPool({ budgetBytes: 16 * KIB });
  const huge = await pool.take(256 * KIB);
  t.is(huge.length, 256 * KIB);
  let second = false;
  const next = pool.take(4 * KIB).then(() => { second = true; });
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.false(second);
  pool.give(huge);
  await next;
  t.true(second);
});
