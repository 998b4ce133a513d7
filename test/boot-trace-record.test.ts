// Boot trace, record and store (lib/trace/, lib/cor/trace-recorder.ts, lib/cor/boot-tracing.ts):
// a device records the order in which the guest first reads data blocks, leaves out blocks written
// before being read and zero blocks, and stores the trace by manifest digest; a stored trace that
// does not match (another image version, corrupt, truncated, another format) is refused with one
// log line and the reads go on. Read by a real client (qemu-io) over the device's NBD socket.
import test from 'ava';
import { join } from 'node:path';
import { mkdir, readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { withDir } from 'tmp-promise';
import { openCorDevice } from '../lib/cor/device.js';
import { TraceStore } from '../lib/trace/trace-store.js';
import { decodeTrace, encodeTrace, TRACE_FORMAT_VERSION, type BootTrace } from '../lib/trace/trace-format.js';
import { mergeTraces } from '../lib/trace/trace-merge.js';
import { TraceRefused } from '../lib/trace/errors.js';
import { makeImage, qemuImgDd, qemuIo } from './cor-fixtures.js';

const BS = 65536;
const DIGEST = 'ab'.repeat(32);

function sampleTrace(overrides: Partial<BootTrace> = {}): BootTrace {
  return {
    manifestDigest: DIGEST, imageRef: 'debian@3', blockSize: BS, blockCount: 1000, recordedAt: 1_700_000_000_000,
    storageReadyMs: 7000, readyMs: 24000,
    entries: [{ block: 5, ms: 0 }, { block: 900, ms: 12 }, { block: 6, ms: 13 }],
    ...overrides,
  };
}

test('a trace survives encode and decode whole', (t) => {
  const trace = sampleTrace();
  t.deepEqual(decodeTrace(encodeTrace(trace), DIGEST), trace);
  const noMilestones = sampleTrace({ storageReadyMs: undefined, readyMs: undefined });
  const decoded = decodeTrace(encodeTrace(noMilestones));
  t.is(decoded.storageReadyMs, undefined);
  t.is(decoded.readyMs, undefined);
});

test('a trace of another image version, a corrupt one, a truncated one, another format are refused, saying which', (t) => {
  const bytes = encodeTrace(sampleTrace());
  const reason = (data: Buffer, digest = DIGEST) => t.throws(() => decodeTrace(data, digest), { instanceOf: TraceRefused })!.message;
  t.regex(reason(bytes, 'cd'.repeat(32)), /another image version/);
  const corrupt = Buffer.from(bytes);
  corrupt[corrupt.length - 40]! ^= 1;
  t.regex(reason(corrupt), /checksum mismatch/);
  t.regex(reason(bytes.subarray(0, bytes.length - 3)), /truncated/);
  t.regex(reason(bytes.subarray(0, 20)), /truncated/);
  t.regex(reason(Buffer.concat([bytes, Buffer.alloc(1)])), /trailing/);
  const future = Buffer.from(bytes);
  future.writeUInt16LE(TRACE_FORMAT_VERSION + 1, 8);
  t.regex(reason(future), /format version 2/);
  t.regex(reason(Buffer.alloc(200)), /bad magic/);
});

test('merged recordings keep what most boots read, in the median order', (t) => {
  const boot = (blocks: Array<[number, number]>, recordedAt: number) => sampleTrace({ recordedAt, entries: blocks.map(([block, ms]) => ({ block, ms })) });
  const merged = mergeTraces([
    boot([[1, 0], [2, 10], [3, 20], [7, 30]], 1),
    boot([[2, 0], [1, 5], [3, 25]], 2),
    boot([[1, 0], [3, 8], [2, 30], [9, 40]], 3),
  ]);
  // 7 and 9 were read by one boot of three: left out. 1 at 0,5,0 → 0; 2 at 10,0,30 → 10; 3 at 20,25,8 → 20.
  t.deepEqual(merged.entries.map((e) => e.block), [1, 2, 3]);
  t.is(merged.recordedAt, 3);
});

test('the store keeps the newest recordings per image version and replaces them when re-recorded', (t) => withDir(async ({ path: dir }) => {
  const store = new TraceStore(join(dir, 'traces'));
  t.is(await store.load(DIGEST), undefined);
  for (let i = 0; i < 7; i++) await store.save(sampleTrace({ recordedAt: 1000 + i }));
  const loaded = await store.load(DIGEST);
  t.is(loaded?.recordings, 5);
  t.is(loaded?.trace.recordedAt, 1006);
  await store.replace(sampleTrace({ recordedAt: 2000, entries: [{ block: 1, ms: 0 }] }));
  const replaced = await store.load(DIGEST);
  t.is(replaced?.recordings, 1);
  t.deepEqual(replaced?.trace.entries, [{ block: 1, ms: 0 }]);
  const [summary] = await store.find('debian@3');
  t.is(summary?.manifestDigest, DIGEST);
  t.deepEqual(await store.find('debian'), [summary!]);
  t.deepEqual(await store.find(DIGEST.slice(0, 8)), [summary!]);
  t.deepEqual(await store.find('debian@2'), []);
  await store.remove(DIGEST);
  t.deepEqual(await store.list(), []);
}, { unsafeCleanup: true }));

test('a device records the first reads in order, leaving out zero blocks and blocks written before read', (t) => withDir(async ({ path: dir }) => {
  // mixedContent: block 1, 5, 9, … are zero; 0, 2, 3, 4, 6, 7 data.
  const image = await makeImage(dir, 'demo', { size: 64 * BS });
  const traces = join(dir, 'traces');
  const lines: string[] = [];
  const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [image.repoDir], fetchAheadBytes: 0, trace: { dir: traces, to: false }, log: (line) => lines.push(line) });
  try {
    await qemuIo(device.uri, [
      `read ${40 * BS} ${BS}`,          // block 40: data
      `write -P 7 ${20 * BS} ${BS}`,    // block 20 written whole before any read: left out
      `read ${20 * BS} ${BS}`,
      `read ${2 * BS} ${3 * BS}`,       // 2, 3, 4
      `read ${40 * BS} ${BS}`,          // again: recorded once
      `read ${BS} ${BS}`,               // block 1: zero, left out
      `write -P 9 ${10 * BS + 100} 10`, // block 10 partially written: its old content was read
    ]);
    device.trace!.milestone('storage-ready');
    const outcome = await device.trace!.finish();
    t.is(outcome.action, 'recorded');
    t.is((await device.trace!.finish()).file, outcome.file, 'finish stores once');
  } finally {
    await device.close();
  }
  const loaded = await new TraceStore(traces).load(await onlyDigest(traces));
  const trace = loaded!.trace;
  t.deepEqual(trace.entries.map((e) => e.block), [40, 2, 3, 4, 10]);
  t.is(trace.imageRef, 'demo@1');
  t.is(trace.blockCount, 64);
  t.true(trace.storageReadyMs !== undefined && trace.readyMs !== undefined && trace.readyMs >= trace.storageReadyMs);
  t.true(trace.entries.every((e, i) => i === 0 || e.ms >= trace.entries[i - 1]!.ms));
  t.true(lines.some((line) => /boot trace: recorded 5 blocks/.test(line)), lines.join('\n'));
}, { unsafeCleanup: true }));

async function onlyDigest(traces: string): Promise<string> {
  const [digest, ...rest] = await readdir(traces);
  if (!digest || rest.length > 0) throw new Error(`expected one image version in ${traces}`);
  return digest;
}

for (const [kind, damage] of [
  ['for another image version', async (file: string) => writeFile(file, encodeTrace({ ...decodeTrace(await readFile(file)), manifestDigest: 'cd'.repeat(32) }))],
  ['corrupt', async (file: string) => { const bytes = await readFile(file); bytes[bytes.length - 50]! ^= 0x10; await writeFile(file, bytes); }],
  ['truncated', async (file: string) => { const bytes = await readFile(file); await writeFile(file, bytes.subarray(0, bytes.length - 11)); }],
] as const) {
  test(`a stored trace ${kind} is refused with one log line and the reads go on`, (t) => withDir(async ({ path: dir }) => {
    const image = await makeImage(dir, 'demo', { size: 64 * BS });
    const traces = join(dir, 'traces');
    const first = await openCorDevice({ image: 'demo', disk: join(dir, 'first.raw'), from: [image.repoDir], trace: { dir: traces, to: false } });
    try {
      await qemuIo(first.uri, [`read ${3 * BS} ${4 * BS}`]);
      await first.trace!.finish();
    } finally {
      await first.close();
    }
    const digest = await onlyDigest(traces);
    const [file] = await readdir(join(traces, digest));
    await damage(join(traces, digest, file!));
    const lines: string[] = [];
    const second = await openCorDevice({ image: 'demo', disk: join(dir, 'second.raw'), from: [image.repoDir], trace: { dir: traces, to: false }, log: (line) => lines.push(line) });
    try {
      const refusals = lines.filter((line) => /boot trace .* refused/.test(line));
      t.is(refusals.length, 1, lines.join('\n'));
      t.regex(refusals[0]!, kind === 'corrupt' ? /checksum/ : kind === 'truncated' ? /truncated/ : /another image version/);
      t.is(second.stats().traceBlocks, 0, 'nothing is replayed');
      // The reads go on, with the image's bytes.
      await qemuIo(second.uri, [`read -P 0 ${BS} ${BS}`]);
      const out = join(dir, 'out.raw');
      await qemuImgDd(second.uri, out, BS, 3, 4);
      t.true((await readFile(out)).equals(image.content.subarray(3 * BS, 7 * BS)));
      // This boot records a good trace in its place.
      t.is((await second.trace!.finish()).action, 'recorded');
    } finally {
      await second.close();
    }
    t.is((await new TraceStore(traces).load(digest))?.recordings, 1);
  }, { unsafeCleanup: true }));
}

test('a huge file or a directory among the stored traces is passed over with a log line; the good recording still loads', (t) => withDir(async ({ path: dir }) => {
  const store = new TraceStore(join(dir, 'traces'));
  await store.save(sampleTrace());
  const versionDir = join(dir, 'traces', DIGEST);
  await writeFile(join(versionDir, '000000000000001-huge.trace'), '');
  await truncate(join(versionDir, '000000000000001-huge.trace'), 3 * 1024 ** 3); // sparse: 3 GiB
  await mkdir(join(versionDir, '000000000000002-dir.trace'));
  const lines: string[] = [];
  const loaded = await store.load(DIGEST, (line) => lines.push(line));
  t.is(loaded?.recordings, 1);
  t.true(lines.some((line) => /huge\.trace refused \(3221225472 bytes, larger than any trace\)/.test(line)), lines.join('\n'));
  t.true(lines.some((line) => /dir\.trace is not a regular file/.test(line)), lines.join('\n'));
  t.is((await store.list()).length, 1);
}, { unsafeCleanup: true }));
