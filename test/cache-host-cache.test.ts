// The host-wide block cache (lib/cache/): devices of one image on one host fetch each block from
// the repository once, racing or one after the other, in one process or several; a damaged cache
// block is never served; a full cache evicts and keeps serving; a writer killed mid-way leaves
// nothing that is served wrong. The wire is watched by a proxy that parses every READ in front of
// a real `lazyboot repo serve`; the devices are read by nbdcopy. Serial: each test runs a server,
// a proxy and up to three devices, and six at once on a loaded 2-core machine hit fetch timeouts.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { openCorDevice } from '../lib/cor/device.js';
import { makeImage, nbdcopyTo, startRepoServer } from './cor-fixtures.js';
import { NbdCountingProxy } from './helpers/nbd-counting-proxy.js';
import { BIN, serveDisk } from './helpers/disk-serve.js';

const BS = 65536;

/** 160 blocks of random data with every fifth block zero (zero blocks never touch the cache). */
function imageContent(): Buffer {
  const content = randomBytes(160 * BS);
  for (let b = 0; b < 160; b += 5) content.fill(0, b * BS, (b + 1) * BS);
  return content;
}
const DATA_BLOCKS = 128;

async function served(dir: string, content: Buffer) {
  const image = await makeImage(dir, 'demo', { size: content.length, content });
  const server = await startRepoServer(image.repoDir, join(dir, 'repo.sock'));
  const proxy = await NbdCountingProxy.start(join(dir, 'proxy.sock'), join(dir, 'repo.sock'));
  return { proxy, close: async () => { await proxy.close(); await server.kill(); } };
}

/** Every block file in the cache holds the bytes its name (their SHA-256) says. */
async function cacheFilesVerify(cacheDir: string): Promise<number> {
  let files = 0;
  for (const shard of await readdir(join(cacheDir, 'blocks'))) {
    for (const name of await readdir(join(cacheDir, 'blocks', shard))) {
      const data = await readFile(join(cacheDir, 'blocks', shard, name));
      if (createHash('sha256').update(data).digest('hex') !== name) throw new Error(`cache block ${name} holds other bytes`);
      files++;
    }
  }
  return files;
}

test.serial('two devices reading one image at once fetch each block once; a third reads it all from the cache', (t) => withDir(async ({ path: dir }) => {
  const content = imageContent();
  const link = await served(dir, content);
  const cache = { dir: join(dir, 'cache'), maxBytes: 1024 ** 3 };
  try {
    const open = (name: string) => openCorDevice({ image: 'demo', disk: join(dir, `${name}.raw`), from: [link.proxy.uri], cache });
    const [a, b] = await Promise.all([open('a'), open('b')]);
    try {
      await Promise.all([nbdcopyTo(a.uri, join(dir, 'a.out')), nbdcopyTo(b.uri, join(dir, 'b.out'))]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
    t.true((await readFile(join(dir, 'a.out'))).equals(content));
    t.true((await readFile(join(dir, 'b.out'))).equals(content));
    const twice = [...link.proxy.readsPerBlock(BS)].filter(([, count]) => count > 1);
    t.deepEqual(twice, [], 'no block crossed the link twice');
    t.true(link.proxy.requestedBlockBytes <= content.length, `${link.proxy.requestedBlockBytes} bytes of blocks asked for`);
    t.is(await cacheFilesVerify(cache.dir), DATA_BLOCKS);

    const before = link.proxy.requestedBlockBytes;
    const c = await open('c');
    try {
      await nbdcopyTo(c.uri, join(dir, 'c.out'));
      t.is(c.stats().cacheHits, DATA_BLOCKS);
    } finally {
      await c.close();
    }
    t.true((await readFile(join(dir, 'c.out'))).equals(content));
    t.is(link.proxy.requestedBlockBytes, before, 'the third device fetched nothing from the repository');
  } finally {
    await link.close();
  }
}, { unsafeCleanup: true }));

test.serial('a damaged cache block is never served: it is removed and fetched again', (t) => withDir(async ({ path: dir }) => {
  const content = imageContent();
  const link = await served(dir, content);
  const cache = { dir: join(dir, 'cache'), maxBytes: 1024 ** 3 };
  try {
    const first = await openCorDevice({ image: 'demo', disk: join(dir, 'a.raw'), from: [link.proxy.uri], cache });
    await nbdcopyTo(first.uri, join(dir, 'a.out'));
    await first.close();
    // Flip a byte in the file of block 1, and truncate the one of block 2.
    const fileOf = (block: number) => {
      const digest = createHash('sha256').update(content.subarray(block * BS, (block + 1) * BS)).digest('hex');
      return join(cache.dir, 'blocks', digest.slice(0, 2), digest);
    };
    const damaged = Buffer.from(content.subarray(BS, 2 * BS));
    damaged[100] ^= 0xff;
    await writeFile(fileOf(1), damaged);
    await writeFile(fileOf(2), content.subarray(2 * BS, 2 * BS + 1000));
    const before = link.proxy.reads.length;
    const second = await openCorDevice({ image: 'demo', disk: join(dir, 'b.raw'), from: [link.proxy.uri], cache });
    try {
      await nbdcopyTo(second.uri, join(dir, 'b.out'));
      t.is(second.stats().cacheHits, DATA_BLOCKS - 2);
    } finally {
      await second.close();
    }
    t.true((await readFile(join(dir, 'b.out'))).equals(content));
    const refetched = link.proxy.reads.slice(before).filter((read) => !read.exportName.startsWith('manifest:'));
    const blocksRefetched = refetched.flatMap((read) => Array.from({ length: read.length / BS }, (_, i) => read.offset / BS + i)).sort((x, y) => x - y);
    t.deepEqual(blocksRefetched, [1, 2], 'only the two damaged blocks went upstream');
    t.is(await cacheFilesVerify(cache.dir), DATA_BLOCKS, 'and they are stored right again');
  } finally {
    await link.close();
  }
}, { unsafeCleanup: true }));

test.serial('a cache past its size evicts the least recently used blocks and keeps serving right', (t) => withDir(async ({ path: dir }) => {
  const content = imageContent();
  const link = await served(dir, content);
  const cache = { dir: join(dir, 'cache'), maxBytes: 2 * 1024 * 1024 }; // 32 of the 128 data blocks
  try {
    for (const name of ['a', 'b']) {
      const device = await openCorDevice({ image: 'demo', disk: join(dir, `${name}.raw`), from: [link.proxy.uri], cache });
      try {
        await nbdcopyTo(device.uri, join(dir, `${name}.out`));
      } finally {
        await device.close();
      }
      t.true((await readFile(join(dir, `${name}.out`))).equals(content));
      const stored = await cacheFilesVerify(cache.dir);
      t.true(stored > 0 && stored * BS <= cache.maxBytes, `${stored} blocks kept in a ${cache.maxBytes}-byte cache`);
    }
  } finally {
    await link.close();
  }
}, { unsafeCleanup: true }));

test.serial('two `disk serve` processes racing through one cache fetch each block once; a killed one leaves nothing served wrong', (t) => withDir(async ({ path: dir }) => {
  const content = imageContent();
  const link = await served(dir, content);
  const cacheDir = join(dir, 'cache');
  try {
    const serve = (name: string) => serveDisk(['demo', '--disk', join(dir, `${name}.raw`), '--from', link.proxy.uri, '--cache', cacheDir]);
    const [a, b] = await Promise.all([serve('a'), serve('b')]);
    if (!a.serving || !b.serving) throw new Error(`disk serve did not start: ${a.serving ? '' : a.stderr}${b.serving ? '' : b.stderr}`);
    try {
      await Promise.all([nbdcopyTo(a.uri, join(dir, 'a.out')), nbdcopyTo(b.uri, join(dir, 'b.out'))]);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    t.true((await readFile(join(dir, 'a.out'))).equals(content));
    t.true((await readFile(join(dir, 'b.out'))).equals(content));
    t.deepEqual([...link.proxy.readsPerBlock(BS)].filter(([, count]) => count > 1), [], 'no block crossed the link twice');

    // A third one killed (SIGKILL) in the middle of a cold read into a fresh cache…
    const freshCache = join(dir, 'cache2');
    const victim = await serveDisk(['demo', '--disk', join(dir, 'v.raw'), '--from', link.proxy.uri, '--cache', freshCache]);
    if (!victim.serving) throw new Error(victim.stderr);
    const copy = execa('nbdcopy', ['--no-extents', '--connections=1', '--requests=1', '--request-size=65536', victim.uri, join(dir, 'v.out')], { reject: false });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await victim.stop('SIGKILL');
    await copy;
    // … leaves only whole, right blocks behind, and its claims are taken over, not waited on.
    await cacheFilesVerify(freshCache).catch((error: Error) => t.fail(error.message));
    const after = await serveDisk(['demo', '--disk', join(dir, 'w.raw'), '--from', link.proxy.uri, '--cache', freshCache]);
    if (!after.serving) throw new Error(after.stderr);
    try {
      await nbdcopyTo(after.uri, join(dir, 'w.out'));
    } finally {
      await after.stop();
    }
    t.true((await readFile(join(dir, 'w.out'))).equals(content));
    t.is(await cacheFilesVerify(freshCache), DATA_BLOCKS);
  } finally {
    await link.close();
  }
}, { unsafeCleanup: true }));

test.serial('`cache status` and `cache prune` report and empty the cache; a bad size is one clear line', (t) => withDir(async ({ path: dir }) => {
  const content = imageContent();
  const link = await served(dir, content);
  const cacheDir = join(dir, 'cache');
  try {
    const device = await openCorDevice({ image: 'demo', disk: join(dir, 'a.raw'), from: [link.proxy.uri], cache: { dir: cacheDir } });
    await nbdcopyTo(device.uri, join(dir, 'a.out'));
    await device.close();
  } finally {
    await link.close();
  }
  const status = JSON.parse((await execa('node', [BIN, 'cache', 'status', '--dir', cacheDir, '--json'])).stdout) as { blocks: number; bytes: number; maxBytes: number };
  t.is(status.blocks, DATA_BLOCKS);
  t.is(status.bytes, DATA_BLOCKS * BS);
  t.true(status.maxBytes >= 256 * 1024 * 1024, 'the default limit: a tenth of the free space, at least 256 MiB');
  const pruned = await execa('node', [BIN, 'cache', 'prune', '--dir', cacheDir, '--keep', '1M']);
  t.regex(pruned.stdout, /removed 112 blocks \(7(\.0)? MiB\)/);
  t.is(await cacheFilesVerify(cacheDir), 16);
  const bad = await execa('node', [BIN, 'cache', 'status', '--dir', cacheDir, '--cache-size', 'banana'], { reject: false });
  t.not(bad.exitCode, 0);
  t.is(bad.stderr.trim().split('\n').length, 1, bad.stderr);
  t.regex(bad.stderr, /banana/);
}, { unsafeCleanup: true }));

test.serial('the CLI uses the cache by default for an NBD repository (under $XDG_CACHE_HOME), not with --no-cache', (t) => withDir(async ({ path: dir }) => {
  const content = imageContent();
  const link = await served(dir, content);
  const defaultDir = join(process.env.XDG_CACHE_HOME!, 'lazyboot', 'blocks');
  try {
    const off = await serveDisk(['demo', '--disk', join(dir, 'off.raw'), '--from', link.proxy.uri, '--no-cache']);
    if (!off.serving) throw new Error(off.stderr);
    try {
      await nbdcopyTo(off.uri, join(dir, 'off.out'));
    } finally {
      await off.stop();
    }
    const none = JSON.parse((await execa('node', [BIN, 'cache', 'status', '--json'])).stdout) as { dir: string; blocks: number };
    t.is(none.dir, defaultDir);
    t.is(none.blocks, 0, '--no-cache stored nothing');
    const on = await serveDisk(['demo', '--disk', join(dir, 'on.raw'), '--from', link.proxy.uri]);
    if (!on.serving) throw new Error(on.stderr);
    try {
      await nbdcopyTo(on.uri, join(dir, 'on.out'));
    } finally {
      await on.stop();
    }
    t.true((await readFile(join(dir, 'on.out'))).equals(content));
    t.is(await cacheFilesVerify(defaultDir), DATA_BLOCKS);
  } finally {
    await link.close();
  }
}, { unsafeCleanup: true }));
