// Hostile and stuck NBD clients against real `lazyboot repo serve` / `disk serve` processes: each
// one costs the server a bounded amount of memory (VmRSS / VmHWM from /proc/PID/status), other
// clients go on being served, and the connection is closed when it breaks a limit. Bounds are on
// outcomes and memory, each with its reason; no test depends on how fast this machine is.
import test, { type ExecutionContext } from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { createConnection, type Socket } from 'node:net';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as P from '../lib/nbd/protocol.js';
import { decodeOptionReplyHeader, encodeClientFlags, encodeExportRequest, encodeRequest, OPTION_REPLY_HEADER_BYTES } from '../lib/nbd/wire.js';
import { makeImage, type TestImage } from './cor-fixtures.js';
import { RawPeer, exportNameData, optionHeader } from './helpers/nbd-raw-peer.js';
import { memoryOf, startServing, MiB, type ServedProcess } from './helpers/served-process.js';
import { MemoryBackend } from './helpers/memory-backend.js';
import { startNbdServer } from '../lib/nbd/server.js';
import { CLI } from './helpers/cli-path.js';

const IMAGE_BYTES = 8 * MiB;
/** The flood the issue measured: 8 MiB of options cost `disk serve` +290 MB before the fix. */
const OPTION_FLOOD_BYTES = 8 * MiB;

type Kind = 'repo' | 'disk';

async function serve(kind: Kind, dir: string, image: TestImage, extra: string[] = []): Promise<{ server: ServedProcess; socket: string; exportName: string }> {
  const socket = join(dir, `${kind}.sock`);
  const args = kind === 'repo'
    ? ['repo', 'serve', '--repo', image.repoDir, '--socket', socket, ...extra]
    : ['disk', 'serve', 'alpha', '--disk', join(dir, 'disk.raw'), '--from', image.repoDir, '--socket', socket, ...extra];
  return { server: await startServing(args), socket, exportName: kind === 'repo' ? 'alpha' : 'disk' };
}

function uriOf(socket: string, exportName: string): string {
  return `nbd+unix:///${exportName}?socket=${socket}`;
}

/** A connection that has passed the greeting and never reads another byte. */
async function nonReadingPeer(socket: string): Promise<Socket> {
  const peer = createConnection(socket);
  peer.on('error', () => {});
  await once(peer, 'connect');
  // Without a 'data' listener the stream stops reading once its small buffer is full.
  peer.write(encodeClientFlags(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES));
  return peer;
}

/**
 * Writes options until `total` bytes are out, the server stops taking them (no 'drain' for 2 s:
 * the kernel buffers are full because the server no longer reads) or closes the connection.
 * Each option is answered with about as many bytes as it has: an unknown export's name (echoed
 * in the error reply) and NBD_OPT_LIST.
 */
async function floodOptions(peer: Socket, total: number): Promise<{ taken: number; closedByServer: boolean }> {
  const info = encodeExportRequest(Buffer.alloc(300, 'x'));
  const option = Buffer.concat([optionHeader(P.OPT_INFO, info.length), info, optionHeader(P.OPT_LIST, 0)]);
  let closedByServer = false;
  peer.once('error', () => { closedByServer = true; });
  peer.once('close', () => { closedByServer = true; });
  let sent = 0;
  while (sent < total && !closedByServer) {
    sent += option.length;
    if (!peer.write(option)) {
      const drained = await Promise.race([once(peer, 'drain').then(() => true, () => false), new Promise((resolve) => setTimeout(() => resolve(false), 2000))]);
      if (!drained) break;
    }
  }
  return { taken: sent - peer.writableLength, closedByServer };
}

const optionFlood = test.macro(async (t: ExecutionContext, kind: Kind) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  const { server, socket, exportName } = await serve(kind, dir, image, ['--stall-timeout', '3']);
  try {
    // A first real client, so the baseline includes what serving costs anyway.
    await execa('nbdinfo', [uriOf(socket, exportName)]);
    const before = await memoryOf(server.pid);
    const peer = await nonReadingPeer(socket);
    const { taken, closedByServer } = await floodOptions(peer, OPTION_FLOOD_BYTES);
    // Either the server stopped reading (its unsent replies passed 64 KiB: only the kernel's
    // socket buffers and 64 KiB of read-ahead get in) or it closed the connection at its option
    // cap; both long before the 8 MiB were taken.
    t.true(closedByServer || taken < OPTION_FLOOD_BYTES / 2, `the server took ${(taken / MiB).toFixed(1)} MiB of options from a client that never reads`);
    const after = await memoryOf(server.pid);
    t.log(`${kind} serve: took ${(taken / MiB).toFixed(2)} MiB of options, closed ${closedByServer}; RSS ${(before.rss / MiB).toFixed(0)} → ${(after.rss / MiB).toFixed(0)} MiB`);
    // What the server holds for it is ~64 KiB of replies and ~64 KiB read ahead; 32 MiB leaves
    // room for V8's heap growing and collecting, and is a tenth of what the flood cost before.
    t.true(after.rss - before.rss < 32 * MiB, `RSS grew by ${((after.rss - before.rss) / MiB).toFixed(1)} MiB (${(before.rss / MiB).toFixed(0)} → ${(after.rss / MiB).toFixed(0)} MiB)`);
    // Another client is served meanwhile.
    const other = await execa('nbdinfo', ['--size', uriOf(socket, exportName)]);
    t.is(Number(other.stdout.trim()), IMAGE_BYTES);
    // Whichever stopped it, the connection is closed: by the option cap or the stall timeout.
    t.true(await server.waitForLog(/more than 1024 options|has not read its replies for [\d.]+ s: closing/), server.stderr());
    peer.destroy();
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

test('repo serve: a client that floods NBD_OPT_INFO/LIST and never reads is stopped being read; RSS stays bounded', optionFlood, 'repo');
test('disk serve: a client that floods NBD_OPT_INFO/LIST and never reads is stopped being read; RSS stays bounded', optionFlood, 'disk');

const stuckReader = test.macro(async (t: ExecutionContext, kind: Kind) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  // The stall timeout is far away: only each connection's own budget can keep others going.
  const { server, socket, exportName } = await serve(kind, dir, image, ['--stall-timeout', '600']);
  try {
    await execa('nbdinfo', [uriOf(socket, exportName)]);
    const before = await memoryOf(server.pid);
    const peer = await RawPeer.connect(socket);
    await peer.go(exportName);
    peer.socket.pause(); // from here on it reads nothing
    // 64 reads of 4 MiB: 256 MiB of replies, ~30 times what the old shared budget (8–32 MiB) held.
    for (let i = 0; i < 64; i++) peer.sendRequest(P.CMD_READ, (i % 2) * 4 * MiB, 4 * MiB, { cookie: i + 1 });
    // A real client copies the whole export meanwhile. Before the fix it waited for the stuck
    // client's buffers for as long as that client stayed connected (here: for ever).
    const out = join(dir, 'copy.raw');
    const copy = await execa('nbdcopy', [uriOf(socket, exportName), out], { reject: false, timeout: 240_000 });
    t.is(copy.exitCode, 0, `${copy.stderr} ${copy.timedOut ? '(timed out)' : ''}`);
    t.true((await readFile(out)).equals(image.content), 'the copy equals the image');
    const after = await memoryOf(server.pid);
    // The stuck client holds at most its share (8 MiB; 16 MiB in disk serve) and nbdcopy's four
    // connections one share each; the pool keeps up to 32 MiB of idle buffers; 40 MiB more for
    // V8 and the copy's own traffic. The 256 MiB asked for never comes near.
    t.log(`${kind} serve: RSS before ${(before.rss / MiB).toFixed(0)} MiB, peak ${(after.peak / MiB).toFixed(0)} MiB`);
    const share = kind === 'repo' ? 8 * MiB : 16 * MiB;
    const bound = 5 * share + 32 * MiB + 40 * MiB;
    t.true(after.peak - before.rss < bound, `peak RSS grew by ${((after.peak - before.rss) / MiB).toFixed(1)} MiB (bound ${(bound / MiB).toFixed(0)} MiB)`);
    peer.close();
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

test('repo serve: a client with 256 MiB of reads it never reads does not stop nbdcopy from copying the image', stuckReader, 'repo');
test('disk serve: a client with 256 MiB of reads it never reads does not stop nbdcopy from copying the disk', stuckReader, 'disk');

test('a stuck reader is closed by the stall timeout and its buffers come back', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  const { server, socket } = await serve('repo', dir, image, ['--stall-timeout', '1']);
  try {
    const peer = await RawPeer.connect(socket);
    await peer.go('alpha');
    peer.socket.pause();
    for (let i = 0; i < 16; i++) peer.sendRequest(P.CMD_READ, 0, 4 * MiB, { cookie: i + 1 });
    t.true(await server.waitForLog(/connection 1 .*has not read its replies for [\d.]+ s: closing \(stall timeout\)/), server.stderr());
    // A busy client is not stuck: a full copy with many requests in flight is never cut off.
    const copy = await execa('nbdcopy', [uriOf(socket, 'alpha'), join(dir, 'copy.raw')], { reject: false });
    t.is(copy.exitCode, 0, copy.stderr);
    peer.close();
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

test('a slow handshake is closed at its deadline even while the client keeps sending', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  const { server, socket } = await serve('repo', dir, image, ['--handshake-timeout', '1']);
  try {
    const peer = await RawPeer.connect(socket);
    await peer.greet();
    // One byte of an option every 100 ms: an inactivity timer would never fire.
    const option = Buffer.concat([optionHeader(P.OPT_INFO, 1000), Buffer.alloc(1000)]);
    let sent = 0;
    const trickle = setInterval(() => { if (sent < option.length) peer.write(option.subarray(sent, ++sent)); }, 100);
    try {
      t.true(await peer.closedByServer(30_000), 'the server closed the trickling handshake');
    } finally {
      clearInterval(trickle);
    }
    t.log(`${sent} bytes trickled in before the deadline`);
    t.true(await server.waitForLog(/handshake not finished after 1 s: closing/), server.stderr()); // the log line may arrive after the outcome it reports
    const silent = await RawPeer.connect(socket);
    t.true(await silent.closedByServer(30_000), 'a client that says nothing is closed too');
    t.regex((await execa('nbdinfo', ['--size', uriOf(socket, 'alpha')])).stdout, /^\d+/);
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

test('more options than the cap in one handshake close the connection', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  const { server, socket } = await serve('repo', dir, image);
  try {
    const peer = await RawPeer.connect(socket);
    await peer.greet();
    let answered = 0;
    for (let i = 0; i < 2000; i++) {
      peer.write(optionHeader(P.OPT_STRUCTURED_REPLY, 0));
      const reply = await peer.read(20);
      if (!reply) break;
      answered++;
    }
    t.is(answered, 1024, 'the 1025th option is not answered');
    t.true(await peer.closedByServer());
    t.true(await server.waitForLog(/more than 1024 options in one handshake/), server.stderr()); // the log line may arrive after the outcome it reports
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

test('error replies echo at most 256 characters of a client\'s export name', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  const { server, socket } = await serve('repo', dir, image);
  try {
    const peer = await RawPeer.connect(socket);
    await peer.greet();
    const data = exportNameData(Buffer.alloc(60_000, 'n'));
    peer.write(Buffer.concat([optionHeader(P.OPT_INFO, data.length), data]));
    const { type, length } = decodeOptionReplyHeader((await peer.read(OPTION_REPLY_HEADER_BYTES))!)!;
    t.is(type, P.REP_ERR_UNKNOWN >>> 0);
    t.true(length < 400, `error reply of ${length} bytes`);
    t.regex((await peer.read(length))!.toString(), /^export "n{256}…" not present$/);
    peer.close();
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

test('connections beyond --max-connections are refused with the reason; a freed slot is usable again', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  const { server, socket } = await serve('repo', dir, image, ['--max-connections', '2']);
  try {
    const held = [await RawPeer.connect(socket), await RawPeer.connect(socket)];
    for (const peer of held) t.truthy(await peer.read(18), 'greeted');
    const refused = await execa('qemu-img', ['info', uriOf(socket, 'alpha')], { reject: false });
    t.not(refused.exitCode, 0);
    t.regex(refused.stderr, /already has 2 connections open \(its cap\): try again later/);
    const ours = await execa('node', [CLI, 'disk', 'serve', 'alpha', '--disk', join(dir, 'd.raw'), '--from', `nbd+unix:///?socket=${socket}`, '--socket', join(dir, 'd.sock')], { reject: false });
    t.is(ours.exitCode, 1);
    t.regex(ours.stderr, /its cap/);
    t.true(await server.waitForLog(/refused: 2 connections open/), server.stderr()); // the log line may arrive after the outcome it reports
    held[0]!.close();
    // The server learns of the close asynchronously: try until the slot is free (bounded).
    let info: Awaited<ReturnType<typeof execa>> | undefined;
    for (let i = 0; i < 50; i++) {
      info = await execa('nbdinfo', ['--size', uriOf(socket, 'alpha')], { reject: false });
      if (info.exitCode === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    t.is(info!.exitCode, 0, String(info!.stderr));
    held[1]!.close();
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

test('disk serve has the same cap (--max-connections) and idle timeout (--idle-timeout) when asked', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  const { server, socket } = await serve('disk', dir, image, ['--max-connections', '1', '--idle-timeout', '1']);
  try {
    const held = await RawPeer.connect(socket);
    await held.go('disk');
    const refused = await execa('qemu-img', ['info', uriOf(socket, 'disk')], { reject: false });
    t.not(refused.exitCode, 0);
    t.regex(refused.stderr, /already has 1 connections open \(its cap\)/);
    t.true(await held.closedByServer(30_000), 'the idle connection is closed');
    t.true(await server.waitForLog(/idle for 1 s: closing/), server.stderr());
    // The server frees the slot a moment after closing: try until it does (bounded).
    let info: Awaited<ReturnType<typeof execa>> | undefined;
    for (let i = 0; i < 50 && info?.exitCode !== 0; i++) {
      if (i > 0) await new Promise((resolve) => setTimeout(resolve, 100));
      info = await execa('nbdinfo', ['--size', uriOf(socket, 'disk')], { reject: false });
    }
    t.is(Number(String(info!.stdout).trim()), IMAGE_BYTES, 'the freed slot serves the next client');
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

test('an idle connection is closed after --idle-timeout; our repository client reconnects on its next read', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'alpha', { size: IMAGE_BYTES });
  const { server, socket } = await serve('repo', dir, image, ['--idle-timeout', '1']);
  try {
    const peer = await RawPeer.connect(socket);
    await peer.go('alpha');
    t.true(await peer.closedByServer(30_000));
    t.true(await server.waitForLog(/idle for 1 s: closing/), server.stderr()); // the log line may arrive after the outcome it reports
    const { NbdSource } = await import('../lib/fetch/nbd-source.js');
    const { decodeManifest } = await import('../lib/repo/manifest-codec.js');
    const source = new NbdSource(`nbd+unix:///?socket=${socket}`);
    try {
      const manifest = decodeManifest(await source.manifestBytes('alpha'));
      const reader = source.imageReader(manifest);
      t.true((await reader.read(0, 65536)).equals(image.content.subarray(0, 65536)));
      t.true(await server.waitForLog(/connection \d+ .*idle for 1 s: closing[\s\S]*connection \d+ .*idle for 1 s: closing/), 'the reader\'s connection was closed as idle');
      t.true((await reader.read(65536, 65536)).equals(image.content.subarray(65536, 131072)), 'the next read reconnects');
    } finally {
      await source.close();
    }
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}, { unsafeCleanup: true }));

// In-process: the mechanisms themselves, without the option cap or a child process in the way.

test('with no option cap, a client that never reads its NBD_OPT_LIST replies is no longer read after a few hundred KiB', (t) => withDir(async ({ path: dir }) => {
  const socket = join(dir, 'nbd.sock');
  const backend = new MemoryBackend(MiB);
  let lists = 0;
  const server = await startNbdServer({
    socketPath: socket,
    limits: { maxOptions: Number.MAX_SAFE_INTEGER },
    exports: { async list() { lists++; return [{ name: 'x'.repeat(200), description: 'y'.repeat(200) }]; }, async open() { return backend; } },
  });
  try {
    const peer = await nonReadingPeer(socket);
    // 16 bytes of option, ~420 bytes of reply: 8 MiB of options ask for ~200 MiB of replies.
    peer.write(Buffer.concat(Array.from({ length: 8 * MiB / 16 }, () => optionHeader(P.OPT_LIST, 0))));
    // Wait until the server has stopped answering (its count holds still for a second); before
    // the fix it went on until every option was read and its ~200 MiB of replies queued.
    let seen = -1;
    while (lists !== seen) {
      seen = lists;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    // Replies stop being produced at 64 KiB unsent; the kernel's buffers hold a few hundred KiB.
    t.true(lists < 4096, `${lists} NBD_OPT_LIST answered`);
    t.true(peer.writableLength > 7 * MiB, `${(peer.writableLength / MiB).toFixed(1)} MiB still unsent by the client`);
    peer.destroy();
  } finally {
    await server.close();
  }
}, { unsafeCleanup: true }));

test('write payloads count against the connection budget: a slow backend stops the server reading writes', (t) => withDir(async ({ path: dir }) => {
  const socket = join(dir, 'nbd.sock');
  const backend = new MemoryBackend(64 * MiB);
  let started = 0;
  const release: Array<() => void> = [];
  const write = backend.write.bind(backend);
  backend.write = async (offset, data, options) => {
    started++;
    await new Promise<void>((resolve) => release.push(resolve));
    return write(offset, data, options);
  };
  const server = await startNbdServer({
    socketPath: socket,
    limits: { connectionBufferBytes: 8 * MiB },
    exports: { async list() { return [{ name: 'w' }]; }, async open() { return backend; } },
  });
  try {
    const peer = await RawPeer.connect(socket);
    await peer.go('w');
    const payload = Buffer.alloc(4 * MiB, 0x5a);
    const header = (i: number): Buffer => encodeRequest({ type: P.CMD_WRITE, flags: 0, cookie: BigInt(i + 1), offset: i * 4 * MiB, length: payload.length });
    // 12 writes of 4 MiB; the backend answers none of them yet.
    let pushed = 0;
    const push = (async () => {
      for (let i = 0; i < 12; i++) {
        pushed = i;
        if (!peer.socket.write(Buffer.concat([header(i), payload]))) await once(peer.socket, 'drain');
      }
    })();
    // Wait until the server stops taking bytes: two 4 MiB payloads fill the 8 MiB budget.
    for (let i = 0; i < 600 && started < 2; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    let last = -1;
    while (peer.socket.bytesWritten - peer.socket.writableLength !== last) {
      last = peer.socket.bytesWritten - peer.socket.writableLength;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    t.is(started, 2, 'the backend was handed two payloads, the budget\'s worth; the rest waits in the client');
    t.true(pushed < 11, 'the client could not push all 48 MiB');
    // Let the backend go: every write completes, in order of the budget.
    while (started < 12 || release.length > 0) {
      for (const done of release.splice(0)) done();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await push;
    for (let i = 0; i < 12; i++) t.is((await peer.readSimpleReply(0)).error, 0);
    t.true(backend.data.subarray(0, 48 * MiB).every((byte) => byte === 0x5a));
    peer.close();
  } finally {
    await server.close();
  }
}, { unsafeCleanup: true }));

/** Fixed newstyle handshake to `name` over a raw peer, with or without structured replies. */
async function rawGo(peer: RawPeer, name: string, structured: boolean): Promise<void> {
  if (!structured) {
    await peer.go(name);
    return;
  }
  await peer.greet();
  const go = exportNameData(name);
  peer.write(Buffer.concat([optionHeader(P.OPT_STRUCTURED_REPLY, 0), optionHeader(P.OPT_GO, go.length), go]));
  for (;;) {
    const header = decodeOptionReplyHeader((await peer.read(OPTION_REPLY_HEADER_BYTES))!)!;
    const payload = (await peer.read(header.length))!;
    if (header.type & P.REP_FLAG_ERROR) throw new Error(`option refused: ${payload.toString()}`);
    if (header.option === P.OPT_GO && header.type === P.REP_ACK) return;
  }
}

const largeReads = test.macro(async (t: ExecutionContext, structured: boolean) => withDir(async ({ path: dir }) => {
  const socket = join(dir, 'nbd.sock');
  let bytesRead = 0;
  const backend = {
    size: 256 * MiB,
    capabilities: { write: false, flush: false, trim: false, writeZeroes: false, extents: false, multiConn: true },
    constraints: { minimum: 1, preferred: 4096, maximum: 32 * MiB },
    async read(offset: number, length: number) { bytesRead += length; return Buffer.alloc(length, 1); },
    async readInto(_offset: number, target: Buffer) { bytesRead += target.length; target.fill(1); },
    async write() { throw new Error('read-only'); }, async flush() {}, async trim() {}, async writeZeroes() {},
    async blockStatus(offset: number, length: number) { return [{ offset, length, hole: false, zero: false }]; },
    async close() {},
  };
  const server = await startNbdServer({ socketPath: socket, limits: { connectionBufferBytes: 8 * MiB }, exports: { async list() { return [{ name: 'big' }]; }, async open() { return backend; } } });
  try {
    const peer = await RawPeer.connect(socket);
    await rawGo(peer, 'big', structured);
    peer.socket.pause();
    for (let i = 0; i < 8; i++) peer.sendRequest(P.CMD_READ, i * 32 * MiB, 32 * MiB, { cookie: i + 1 });
    // Wait until the server stops reading from the backend (its count holds still for a second).
    let seen = -1;
    while (bytesRead !== seen || bytesRead === 0) {
      seen = bytesRead;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    // The budget (8 MiB) plus what the kernel's socket buffers took (well under 1 MiB here), in
    // 512 KiB pieces; before, each 32 MiB read was read whole (allowed alone past the budget).
    t.true(bytesRead <= 10 * MiB, `${(bytesRead / MiB).toFixed(1)} MiB read for a client that reads nothing`);
    // The client can still read everything, in order of its requests.
    peer.socket.resume();
    peer.close();
  } finally {
    await server.close();
  }
}, { unsafeCleanup: true }));

test('32 MiB reads (simple replies) from a client that never reads hold no more than the connection budget', largeReads, false);
test('32 MiB reads (structured replies) from a client that never reads hold no more than the connection budget', largeReads, true);

test('a client that sends thousands of reads and disconnects without reading leaves no work behind', (t) => withDir(async ({ path: dir }) => {
  t.timeout(90_000);
  const socket = join(dir, 'nbd.sock');
  let bytesRead = 0;
  const backend = {
    size: 256 * MiB,
    capabilities: { write: false, flush: false, trim: false, writeZeroes: false, extents: false, multiConn: true },
    constraints: { minimum: 1, preferred: 4096, maximum: 32 * MiB },
    async read(offset: number, length: number) { bytesRead += length; return Buffer.alloc(length, 1); },
    async readInto(_offset: number, target: Buffer) { bytesRead += target.length; target.fill(1); },
    async write() { throw new Error('read-only'); }, async flush() {}, async trim() {}, async writeZeroes() {},
    async blockStatus(offset: number, length: number) { return [{ offset, length, hole: false, zero: false }]; },
    async close() {},
  };
  const server = await startNbdServer({ socketPath: socket, limits: { connectionBufferBytes: 8 * MiB }, exports: { async list() { return [{ name: 'big' }]; }, async open() { return backend; } } });
  try {
    const peer = await RawPeer.connect(socket);
    await rawGo(peer, 'big', false);
    peer.socket.pause();
    // 1 MiB of requests (more than the server reads ahead): 37449 reads of 32 MiB each.
    for (let i = 0; i < 37449; i++) peer.sendRequest(P.CMD_READ, (i % 8) * 32 * MiB, 32 * MiB, { cookie: i + 1 });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    peer.socket.destroy();
    const atClose = bytesRead;
    // Before, the server went on reading the backend for every request it had buffered (1.2 TB).
    let seen = -1;
    for (let waited = 0; waited < 10 && bytesRead !== seen; waited++) {
      seen = bytesRead;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    t.true(bytesRead - atClose <= 16 * MiB, `${((bytesRead - atClose) / MiB).toFixed(0)} MiB read from the backend after the client left`);
  } finally {
    await server.close();
  }
}, { unsafeCleanup: true }));
