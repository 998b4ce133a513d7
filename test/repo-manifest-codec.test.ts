// The manifest encoding: exact round trip, and every kind of damage rejected with a typed error.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { decodeManifest, encodeManifest } from '../lib/repo/manifest-codec.js';
import { InvalidManifest } from '../lib/repo/errors.js';
import { LazybootError } from '../lib/base/errors.js';
import type { Manifest } from '../lib/repo/manifest-format.js';

function sample(overrides: Partial<Manifest> = {}): Manifest {
  const blockCount = 5;
  const digests = randomBytes(blockCount * 32);
  digests.fill(0, 64, 96); // block 2 is a zero block
  return { name: 'debian-12', version: 3, size: 4 * 65536 + 100, blockSize: 65536, blockCount, digests, created: '2026-01-02T03:04:05.000Z', parent: 'debian-12@2', ...overrides };
}

test('a manifest survives encode and decode unchanged', (t) => {
  const manifest = sample();
  const decoded = decodeManifest(encodeManifest(manifest));
  t.deepEqual({ ...decoded, digests: decoded.digests.toString('hex') }, { ...manifest, digests: manifest.digests.toString('hex') });
});

test('a manifest without parent decodes without parent', (t) => {
  const { parent: _parent, ...rest } = sample();
  const decoded = decodeManifest(encodeManifest(rest));
  t.false('parent' in decoded);
});

test('an empty disk (size 0) has no blocks and round-trips', (t) => {
  const manifest = sample({ size: 0, blockCount: 0, digests: Buffer.alloc(0) });
  t.is(decodeManifest(encodeManifest(manifest)).blockCount, 0);
});

test('garbage, truncation and flipped bits are rejected as InvalidManifest (a LazybootError)', (t) => {
  const good = encodeManifest(sample());
  const flipped = Buffer.from(good);
  flipped[good.length - 40]! ^= 1;
  for (const bad of [Buffer.alloc(0), randomBytes(200), good.subarray(0, good.length - 1), flipped, Buffer.concat([good, Buffer.from([0])])]) {
    const error = t.throws(() => decodeManifest(bad), { instanceOf: InvalidManifest });
    t.true(error instanceof LazybootError);
  }
});

test('inconsistent fields cannot be encoded', (t) => {
  t.throws(() => encodeManifest(sample({ blockCount: 4 })), { instanceOf: InvalidManifest });
  t.throws(() => encodeManifest(sample({ blockSize: 3000 })), { instanceOf: InvalidManifest });
  t.throws(() => encodeManifest(sample({ name: 'a/b' })), { instanceOf: InvalidManifest });
  t.throws(() => encodeManifest(sample({ version: 0 })), { instanceOf: InvalidManifest });
});
