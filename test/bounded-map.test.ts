// BoundedMap (lib/base/bounded-map.ts), the bound on a repository server's caches: it keeps at
// most its weight, forgets the least recently used first, and keeps one over-heavy value alone.
import test from 'ava';
import { BoundedMap } from '../lib/base/bounded-map.js';

test('keeps at most its weight, least recently used forgotten first', (t) => {
  const map = new BoundedMap<string, Buffer>(10, (value) => value.length);
  map.set('a', Buffer.alloc(4));
  map.set('b', Buffer.alloc(4));
  t.truthy(map.get('a')); // a is now the most recent
  map.set('c', Buffer.alloc(4));
  t.is(map.get('b'), undefined);
  t.truthy(map.get('a'));
  t.truthy(map.get('c'));
  t.is(map.weight, 8);
  map.set('a', Buffer.alloc(1)); // replacing re-weighs
  t.is(map.weight, 5);
  map.set('huge', Buffer.alloc(50));
  t.is(map.size, 1);
  t.is(map.get('huge')?.length, 50);
  map.delete('huge');
  t.is(map.weight, 0);
  t.is(map.size, 0);
});
