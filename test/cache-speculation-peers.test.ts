// The host's devices reading through one block cache (lib/cache/speculation-peers.ts): a device
// counts the others that fetched blocks lately, in this process and in other processes; one that
// stopped is no longer counted, and a killed process's file is removed.
import test from 'ava';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { withDir } from 'tmp-promise';
import { SpeculationPeers } from '../lib/cache/speculation-peers.js';
import { processAlive } from '../lib/base/process-alive.js';

const MODULE = new URL('../lib/cache/speculation-peers.js', import.meta.url).href;

/** Waits until the peer's own file exists (its refresh runs in the background). */
async function seen(dir: string, count: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await readdir(join(dir, 'peers')).catch(() => [])).length >= count) return;
    await sleep(10);
  }
  throw new Error(`fewer than ${count} peer files after 2 s`);
}

test('a device counts the peers fetching now, in this process and another; stopped and killed peers drop out', (t) => withDir(async ({ path: dir }) => {
  const options = { activeMs: 1500, refreshMs: 0 };
  const a = await SpeculationPeers.open(dir, options);
  const b = await SpeculationPeers.open(dir, options);
  // Another process: a peer that keeps fetching until it is killed.
  const other = execa('node', ['--input-type=module', '-e', `
    const { SpeculationPeers } = await import(${JSON.stringify(MODULE)});
    const peer = await SpeculationPeers.open(${JSON.stringify(dir)}, { refreshMs: 0 });
    setInterval(() => peer.fetching(), 100);
  `], { reject: false });
  try {
    t.is(a.sharers(), 1, 'alone before anyone fetches');
    b.fetching();
    await seen(dir, 2);
    t.is(await a.look(), 2, 'b and the other process');
    t.is(a.sharers(), 3);
    t.is(await b.look(), 1, 'a has fetched nothing: b sees only the other process');
    // b stops fetching: after activeMs it no longer counts.
    await sleep(1700);
    t.is(await a.look(), 1, 'only the other process, still fetching');
    other.kill('SIGKILL');
    await other;
    t.false(processAlive(other.pid!));
    t.is(await a.look(), 0, 'a killed process does not count');
    t.deepEqual((await readdir(join(dir, 'peers'))).filter((name) => name.startsWith(`${other.pid}-`)), [], 'and its file is removed');
  } finally {
    other.kill('SIGKILL');
    await a.close();
    await b.close();
  }
  t.deepEqual(await readdir(join(dir, 'peers')), [], 'closed peers leave no file');
}, { unsafeCleanup: true }));
