// The fixture cache: an image is keyed by its recipe, served from the cache when unchanged,
// and parallel callers (ava runs test files in parallel processes) share one build.
import test from 'ava';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { ensureFixture, recipeHash } from '../fixtures/build.js';

test('the tiny image is served from the cache, keyed by its recipe hash, to parallel callers alike', async (t) => {
  const [first, second] = await Promise.all([ensureFixture('tiny'), ensureFixture('tiny')]);
  t.is(first.path, second.path);
  t.is(basename(first.path), `tiny-${await recipeHash('tiny')}.raw`);
  const again = await ensureFixture('tiny');
  t.false(again.built);
  t.is(again.sizeBytes, 40 * 1024 * 1024);
  t.true(again.allocatedBytes > 4 * 1024 * 1024 && again.allocatedBytes <= again.sizeBytes);
  t.is((await stat(again.path)).size, again.sizeBytes);
});

test('recipe hashes differ between images and are stable', async (t) => {
  const tiny = await recipeHash('tiny');
  t.regex(tiny, /^[0-9a-f]{16}$/);
  t.is(await recipeHash('tiny'), tiny);
  t.not(await recipeHash('debian'), tiny);
});
