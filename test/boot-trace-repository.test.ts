// Boot traces kept in the image repository (lib/trace/trace-homes.ts, repository-traces.ts,
// lib/repo/image-objects.ts): a recording is committed through the repository's write path as an
// object beside its image version, and read back by the next boot whatever the repository form:
// the directory in-process, the write path of a real `lazyboot repo serve` on a unix socket, and
// the merged `trace:NAME@N` export that a read-only NBD client (unix socket or TCP) gets. A
// recording that does not match is left out with one log line and the reads go on; a client that
// cannot write the repository keeps its recording in the host cache. Reads by a real client (qemu-io).
import test from 'ava';
import { join } from 'node:path';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { withDir } from 'tmp-promise';
import { openCorDevice, type CorDeviceOptions } from '../lib/cor/device.js';
import { TraceStore } from '../lib/trace/trace-store.js';
import { decodeTrace, encodeTrace } from '../lib/trace/trace-format.js';
import { makeImage, qemuImgDd, qemuIo, type TestImage } from './cor-fixtures.js';
import { startServing } from './helpers/served-process.js';

const BS = 65536;
/** Data blocks (mixedContent: 1, 5, 9, … are zero) in a jumbled, boot-like order. */
const BOOT_READS = [`read ${30 * BS} ${3 * BS}`, `read ${2 * BS} ${BS}`, `read ${50 * BS} ${2 * BS}`];
const BOOT_BLOCKS = [30, 31, 32, 2, 50, 51];

function traceObjectsDir(image: TestImage): string {
  return join(image.repoDir, 'objects', 'demo', '1', 'trace');
}

async function traceObjects(image: TestImage): Promise<string[]> {
  return (await readdir(traceObjectsDir(image)).catch(() => [] as string[])).filter((name) => !name.startsWith('.'));
}

/** Opens a device, checks what it replayed, reads the boot's blocks, stores the recording; returns the log. */
async function boot(dir: string, options: Pick<CorDeviceOptions, 'from' | 'trace'>, check: (stats: ReturnType<Awaited<ReturnType<typeof openCorDevice>>['stats']>, lines: string[]) => void = () => {}): Promise<string[]> {
  const lines: string[] = [];
  const device = await openCorDevice({ image: 'demo', disk: join(dir, `disk-${Date.now()}-${Math.random()}.raw`), fetchAheadBytes: 0, log: (line) => lines.push(line), ...options });
  try {
    check(device.stats(), lines);
    await qemuIo(device.uri, BOOT_READS);
    await device.trace!.finish();
  } finally {
    await device.close();
  }
  return lines;
}

test('a recorded trace survives a round trip through the repository: its directory, repo serve\'s write path and its NBD export over a unix socket and TCP', (t) => withDir(async ({ path: dir }) => {
  t.timeout(120_000);
  const image = await makeImage(dir, 'demo', { size: 64 * BS });

  // A directory repository this client may write: the recording goes there, not to the host cache.
  const firstCache = join(dir, 'cache-1');
  const first = await boot(dir, { from: [image.repoDir], trace: { dir: firstCache } }, (stats) => t.is(stats.traceBlocks, 0));
  t.true(first.some((line) => line.includes(`boot trace: recorded ${BOOT_BLOCKS.length} blocks`) && line.includes(`the repository ${image.repoDir}`)), first.join('\n'));
  const [object] = await traceObjects(image);
  t.truthy(object, 'one trace object beside demo@1');
  t.deepEqual(decodeTrace(await readFile(join(traceObjectsDir(image), object!))).entries.map((e) => e.block), BOOT_BLOCKS);
  t.deepEqual(await new TraceStore(firstCache).list(), [], 'nothing in the host cache');

  // Another host (its own host cache) reads the directory: it replays the recorded trace.
  await boot(dir, { from: [image.repoDir], trace: { dir: join(dir, 'cache-2'), record: false } }, (stats, lines) => {
    t.is(stats.traceBlocks, BOOT_BLOCKS.length, lines.join('\n'));
    t.true(lines.some((line) => line.includes(`from the repository ${image.repoDir}`)), lines.join('\n'));
  });

  const writeSocket = join(dir, 'write.sock');
  const unix = await startServing(['repo', 'serve', '--repo', image.repoDir, '--socket', join(dir, 'repo.sock'), '--write-socket', writeSocket]);
  const tcp = await startServing(['repo', 'serve', '--repo', image.repoDir, '--listen', '127.0.0.1:0']);
  try {
    // Over NBD with the write path: replayed from the repository, the new recording committed there.
    const writeUri = `http+unix:///?socket=${writeSocket}`;
    const third = await boot(dir, { from: [unix.uri], trace: { dir: join(dir, 'cache-3'), to: writeUri } }, (stats) => t.is(stats.traceBlocks, BOOT_BLOCKS.length));
    t.true(third.some((line) => /boot trace: added 6 blocks .* in the repository http\+unix/.test(line)), third.join('\n'));
    t.is((await traceObjects(image)).length, 2, 'two recordings beside demo@1');
    t.deepEqual(await new TraceStore(join(dir, 'cache-3')).list(), []);

    // Read-only NBD clients (unix socket, TCP) get the merged trace from the `trace:demo@1` export.
    for (const served of [unix, tcp]) {
      const cache = join(dir, `cache-${served === unix ? 'unix' : 'tcp'}`);
      const lines = await boot(dir, { from: [served.uri], trace: { dir: cache } }, (stats, log) => {
        t.is(stats.traceBlocks, BOOT_BLOCKS.length, log.join('\n'));
        t.true(log.some((line) => line.includes(`from the repository ${served.uri}`)), log.join('\n'));
      });
      // It cannot write the repository: its recording is kept in its host cache.
      t.true(lines.some((line) => line.includes(`in ${cache}`)), lines.join('\n'));
      t.is((await new TraceStore(cache).list())[0]?.recordings, 1);
    }
    t.is((await traceObjects(image)).length, 2, 'the read-only clients wrote nothing to the repository');
  } finally {
    await unix.stop();
    await tcp.stop();
  }
}, { unsafeCleanup: true }));

test('a client whose write path is down keeps its recording in the host cache and says so', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const cache = join(dir, 'cache');
  const lines = await boot(dir, { from: [image.repoDir], trace: { dir: cache, to: `http+unix:///?socket=${join(dir, 'nobody-listens.sock')}` } });
  const refused = lines.filter((line) => /boot trace not stored in the repository http\+unix/.test(line));
  t.is(refused.length, 1, lines.join('\n'));
  t.regex(refused[0]!, /cannot write to the repository .*; kept in the host cache .* instead/);
  t.deepEqual(await traceObjects(image), []);
  const [stored] = await new TraceStore(cache).list();
  t.is(stored?.blocks, BOOT_BLOCKS.length);
  // The next boot with the same (down) write path replays it from the host cache.
  await boot(dir, { from: [image.repoDir], trace: { dir: cache, to: `http+unix:///?socket=${join(dir, 'nobody-listens.sock')}`, record: false } }, (stats, log) => {
    t.is(stats.traceBlocks, BOOT_BLOCKS.length, log.join('\n'));
  });
}, { unsafeCleanup: true }));

for (const [kind, damage, reason] of [
  ['for another image version', async (file: string) => writeFile(file, encodeTrace({ ...decodeTrace(await readFile(file)), manifestDigest: 'cd'.repeat(32) })), /another image version/],
  ['corrupt', async (file: string) => { const bytes = await readFile(file); bytes[bytes.length - 50]! ^= 0x10; await writeFile(file, bytes); }, /checksum/],
  ['truncated', async (file: string) => { const bytes = await readFile(file); await writeFile(file, bytes.subarray(0, bytes.length - 11)); }, /truncated/],
] as const) {
  test(`a trace ${kind} in the repository is refused with one log line, by a directory reader and by repo serve, and the reads go on`, (t) => withDir(async ({ path: dir }) => {
    t.timeout(60_000);
    const image = await makeImage(dir, 'demo', { size: 64 * BS });
    await boot(dir, { from: [image.repoDir], trace: { dir: join(dir, 'cache-0') } });
    const [object] = await traceObjects(image);
    await damage(join(traceObjectsDir(image), object!));

    const checkReadsGoOn = async (uri: string) => {
      await qemuIo(uri, [`read -P 0 ${BS} ${BS}`]);
      const out = join(dir, 'out.raw');
      await qemuImgDd(uri, out, BS, 3, 4);
      t.true((await readFile(out)).equals(image.content.subarray(3 * BS, 7 * BS)));
    };

    // Read in-process from the directory: the client refuses it.
    const lines: string[] = [];
    const device = await openCorDevice({ image: 'demo', disk: join(dir, 'second.raw'), from: [image.repoDir], trace: { dir: join(dir, 'cache-1'), record: false }, log: (line) => lines.push(line) });
    try {
      const refusals = lines.filter((line) => /boot trace .* refused/.test(line));
      t.is(refusals.length, 1, lines.join('\n'));
      t.regex(refusals[0]!, reason);
      t.is(device.stats().traceBlocks, 0, 'nothing is replayed');
      await checkReadsGoOn(device.uri);
    } finally {
      await device.close();
    }

    // Through repo serve: the server leaves it out of the merged export (one line in its log).
    const served = await startServing(['repo', 'serve', '--repo', image.repoDir, '--socket', join(dir, 'repo.sock')]);
    try {
      const clientLines: string[] = [];
      const remote = await openCorDevice({ image: 'demo', disk: join(dir, 'third.raw'), from: [served.uri], trace: { dir: join(dir, 'cache-2'), record: false }, log: (line) => clientLines.push(line) });
      try {
        t.is(remote.stats().traceBlocks, 0, clientLines.join('\n'));
        await checkReadsGoOn(remote.uri);
      } finally {
        await remote.close();
      }
      const serverRefusals = served.stderr().split('\n').filter((line) => /boot trace .* refused/.test(line));
      t.is(serverRefusals.length, 1, served.stderr());
      t.regex(serverRefusals[0]!, reason);
    } finally {
      await served.stop();
    }
    t.deepEqual(await traceObjects(image), [object!], 'a reader never changes the repository');
  }, { unsafeCleanup: true }));
}
