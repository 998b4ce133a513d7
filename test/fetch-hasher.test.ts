// The block hasher: worker-thread digests (shared buffers) equal inline SHA-256; skipped blocks stay zero.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { hashBlocks } from '../lib/fetch/block-hasher.js';

const allocShared = (length: number) => Buffer.from(new SharedArrayBuffer(length));

const BS = 65536;

function expected(data: Buffer, skip?: Uint8Array): Buffer {
  const count = Math.ceil(data.length / BS);
  const out = Buffer.alloc(count * 32);
  for (let i = 0; i < count; i++) {
    if (skip?.[i] === 1) continue;
    createHash('sha256').update(data.subarray(i * BS, Math.min((i + 1) * BS, data.length))).digest().copy(out, i * 32);
  }
  return out;
}

test('a shared run of blocks (worker) hashes like inline SHA-256, short last block included', async (t) => {
  const length = 9 * BS + 1234;
  const shared = allocShared(length);
  randomBytes(length).copy(shared);
  const skip = new Uint8Array(10);
  skip[3] = 1;
  t.deepEqual(await hashBlocks(shared, BS, skip), expected(shared, skip));
  // A view into the middle of the shared memory (byteOffset != 0).
  const view = shared.subarray(BS, 6 * BS);
  t.deepEqual(await hashBlocks(view, BS), expected(view));
});

test('an unshared buffer is hashed inline with the same result; many concurrent runs keep their order', async (t) => {
  const plain = randomBytes(5 * BS);
  t.deepEqual(await hashBlocks(plain, BS), expected(plain));
  const runs = Array.from({ length: 12 }, () => { const b = allocShared(4 * BS); randomBytes(4 * BS).copy(b); return b; });
  const results = await Promise.all(runs.map((run) => hashBlocks(run, BS)));
  results.forEach((digests, i) => t.deepEqual(digests, expected(runs[i]!)));
});
