// The reply buffer pool: reuse by size class, bounded, and a size switch evicts the old size.
import test from 'ava';
import { BufferPool } from '../lib/nbd/buffer-pool.js';

test('buffers are reused by power-of-two size class', (t) => {
  const pool = new BufferPool(1024 * 1024);
  const first = pool.take(5000);
  t.is(first.length, 8192);
  pool.give(first);
  t.is(pool.take(8000), first);
  t.not(pool.take(8000), first, 'a taken buffer is not handed out twice');
});

test('the pool stays within its bound and gives way to a new size', (t) => {
  const pool = new BufferPool(64 * 1024);
  const small = Array.from({ length: 16 }, () => pool.take(4096));
  for (const buffer of small) pool.give(buffer); // fills the pool with 4 KiB buffers
  const big = pool.take(32 * 1024);
  pool.give(big);
  t.is(pool.take(32 * 1024), big, 'the 32 KiB buffer was kept, 4 KiB ones evicted');
  const huge = pool.take(128 * 1024);
  pool.give(huge);
  t.not(pool.take(128 * 1024), huge, 'larger than the whole pool: not kept');
});
