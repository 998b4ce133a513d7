// Who fetches a block for the host (lib/cache/fetch-claims.ts): one claim per digest; a live
// holder's claim is respected, a dead holder's (SIGKILL) or a leftover's (older than any fetch) is
// taken over; a waiter learns when the block arrives or the claim goes.
import test from 'ava';
import { writeFile, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { FetchClaims } from '../lib/cache/fetch-claims.js';

const DIGEST = 'ab'.repeat(32);

test('one claim per digest; a released claim can be taken again', (t) => withDir(async ({ path: dir }) => {
  const claims = await FetchClaims.open(dir);
  t.true(await claims.claim(DIGEST));
  t.false(await claims.claim(DIGEST), 'held by this live process');
  await claims.release(DIGEST);
  t.true(await claims.claim(DIGEST));
}, { unsafeCleanup: true }));

test('the claim of a process that died is taken over; so is a leftover older than any fetch', (t) => withDir(async ({ path: dir }) => {
  const claims = await FetchClaims.open(dir);
  const gone = await execa('sh', ['-c', 'echo $$']);
  await writeFile(join(dir, 'claims', DIGEST), gone.stdout.trim());
  t.true(await claims.claim(DIGEST), 'its holder has exited');
  await writeFile(join(dir, 'claims', DIGEST), String(process.ppid)); // a live process
  t.false(await claims.claim(DIGEST));
  const old = new Date(Date.now() - 120_000);
  await utimes(join(dir, 'claims', DIGEST), old, old);
  t.true(await claims.claim(DIGEST), 'two minutes old: a leftover, whoever has that PID now');
}, { unsafeCleanup: true }));

test('a waiter sees the block arrive, or the claim released, or gives up after its time and clears the claim', (t) => withDir(async ({ path: dir }) => {
  const holder = await FetchClaims.open(dir);
  const waiter = await FetchClaims.open(dir);
  t.true(await holder.claim(DIGEST));
  let stored = false;
  setTimeout(() => { stored = true; }, 50);
  t.true(await waiter.waitFor(DIGEST, async () => stored, 5_000));
  setTimeout(() => void holder.release(DIGEST), 50);
  t.false(await waiter.waitFor(DIGEST, async () => false, 5_000), 'released without the block: fetch it yourself');
  t.true(await holder.claim(DIGEST));
  const started = Date.now();
  t.false(await waiter.waitFor(DIGEST, async () => false, 200));
  t.true(Date.now() - started >= 200);
  t.true(await waiter.claim(DIGEST), 'the timed-out claim was cleared for the next reader');
}, { unsafeCleanup: true }));
