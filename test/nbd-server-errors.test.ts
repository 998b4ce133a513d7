// Bad input to the NBD server: each gets a clean error (or that one connection closes) and the
// server keeps serving everyone else.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../lib/repo/repository.js';
import type { ConnectionEvent, NbdServer } from '../lib/nbd/server.js';
import * as P from '../lib/nbd/protocol.js';
import { RawPeer, optionHeader } from './helpers/nbd-raw-peer.js';
import { commandName, encodeClientFlags, encodeOption } from '../lib/nbd/wire.js';
import { exportUri, importFile, sampleDisk, serveRepository, writeDisk } from './helpers/repo-fixtures.js';

interface Served {
  dir: string;
  repo: Repository;
  server: NbdServer;
  socket: string;
  disk: Buffer;
  /** The server's connection events. */
  events: ConnectionEvent[];
}

function withServedRepo(body: (s: Served) => Promise<void>) {
  return withDir(async ({ path: dir }) => {
    const repo = await Repository.open(join(dir, 'repo'));
    const disk = sampleDisk();
    await importFile(repo, await writeDisk(join(dir, 'alpha.raw'), disk), 'alpha');
    const socket = join(dir, 'nbd.sock');
    const events: ConnectionEvent[] = [];
    const server = await serveRepository(repo, socket, { onConnectionEvent: (event) => events.push(event) });
    try {
      await body({ dir, repo, server, socket, disk, events });
    } finally {
      await server.close();
      await repo.close();
    }
  }, { unsafeCleanup: true });
}

/** A real client still reads the export correctly. */
async function stillServes(socket: string): Promise<boolean> {
  const result = await execa('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0xa5 2M 64k', exportUri(socket, 'alpha')], { reject: false });
  return result.exitCode === 0 && !/fail/i.test(result.stdout + result.stderr);
}

test('unknown export: the client gets a clean NBD error naming it, the server keeps serving', (t) =>
  withServedRepo(async ({ socket }) => {
    const result = await execa('qemu-img', ['info', exportUri(socket, 'nope')], { reject: false });
    t.not(result.exitCode, 0);
    t.regex(result.stderr, /export "nope" not present/);
    const nbdinfo = await execa('nbdinfo', [exportUri(socket, 'alpha@9')], { reject: false });
    t.not(nbdinfo.exitCode, 0);
    t.true(await stillServes(socket));
    // NBD_OPT_EXPORT_NAME has no error reply: the server closes that connection.
    const peer = await RawPeer.connect(socket);
    await peer.read(18);
    peer.write(Buffer.concat([encodeClientFlags(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES), encodeOption(P.OPT_EXPORT_NAME, Buffer.from('nope'))]));
    t.true(await peer.closedByServer());
    t.true(await stillServes(socket));
  }));

test('read past the end: an error reply, and the connection stays usable', (t) =>
  withServedRepo(async ({ socket, disk }) => {
    const peer = await RawPeer.connect(socket);
    try {
      const { size } = await peer.go('alpha');
      t.is(size, disk.length);
      t.is((await peer.request(P.CMD_READ, size - 100, 4096)).error, P.NBD_EINVAL);
      t.is((await peer.request(P.CMD_READ, size + 4096, 1)).error, P.NBD_EINVAL);
      const ok = await peer.request(P.CMD_READ, size - 4096, 4096);
      t.is(ok.error, 0);
      t.true(ok.data!.equals(disk.subarray(size - 4096)));
    } finally {
      peer.close();
    }
  }));

test('write, trim and write-zeroes to a read-only export are refused with EPERM', (t) =>
  withServedRepo(async ({ socket, disk }) => {
    const peer = await RawPeer.connect(socket);
    try {
      const { flags } = await peer.go('alpha@1');
      t.truthy(flags & P.TFLAG_READ_ONLY);
      t.is((await peer.request(P.CMD_WRITE, 0, 4096, { payload: Buffer.alloc(4096, 1) })).error, P.NBD_EPERM);
      t.is((await peer.request(P.CMD_TRIM, 0, 4096)).error, P.NBD_EPERM);
      t.is((await peer.request(P.CMD_WRITE_ZEROES, 0, 4096)).error, P.NBD_EPERM);
      const read = await peer.request(P.CMD_READ, 0, 4096);
      t.true(read.data!.equals(disk.subarray(0, 4096)), 'nothing was written');
    } finally {
      peer.close();
    }
  }));

test('requests larger than the advertised maximum are refused, the connection stays in step', (t) =>
  withServedRepo(async ({ socket, disk }) => {
    const peer = await RawPeer.connect(socket);
    try {
      await peer.go('alpha');
      t.is((await peer.request(P.CMD_READ, 0, P.MAX_REQUEST_BYTES + 1)).error, P.NBD_EINVAL);
      const oversized = P.MAX_REQUEST_BYTES + 4096;
      t.is((await peer.request(P.CMD_WRITE, 0, oversized, { payload: Buffer.alloc(oversized) })).error, P.NBD_EINVAL);
      t.is((await peer.request(P.CMD_READ, 0, 512)).data!.equals(disk.subarray(0, 512)), true);
      t.is((await peer.request(99, 0, 512)).error, P.NBD_EINVAL, 'unknown command');
      t.is((await peer.request(P.CMD_BLOCK_STATUS, 0, 512)).error, P.NBD_EINVAL, 'no meta context negotiated');
    } finally {
      peer.close();
    }
  }));

test('malformed, truncated and garbage handshakes close only that connection', (t) =>
  withServedRepo(async ({ socket, disk }) => {
    const bystander = await RawPeer.connect(socket);
    await bystander.go('alpha');
    const attempts: Array<(peer: RawPeer) => Promise<void>> = [
      async (peer) => peer.write(randomBytes(64)), // garbage instead of client flags
      async (peer) => {
        await peer.read(18);
        peer.write(Buffer.from([0, 0, 0, 0])); // not fixed newstyle
      },
      async (peer) => {
        await peer.read(18);
        peer.write(Buffer.from([0, 0, 0, 3]));
        peer.write(randomBytes(40)); // garbage option header
      },
      async (peer) => {
        await peer.read(18);
        peer.write(Buffer.from([0, 0, 0, 3]));
        peer.write(optionHeader(P.OPT_GO, 1 << 30)); // absurd option length
      },
    ];
    for (const attempt of attempts) {
      const peer = await RawPeer.connect(socket);
      await attempt(peer);
      t.true(await peer.closedByServer(), 'server closed the bad connection');
    }
    // Truncated handshakes: the client vanishes mid-way.
    for (const bytes of [Buffer.from([0, 0]), Buffer.concat([Buffer.from([0, 0, 0, 3]), optionHeader(P.OPT_GO, 100), Buffer.from('al')])]) {
      const peer = await RawPeer.connect(socket);
      await peer.read(18);
      peer.write(bytes);
      peer.socket.end();
      t.true(await peer.closedByServer());
    }
    const read = await bystander.request(P.CMD_READ, 0, 4096);
    t.true(read.data!.equals(disk.subarray(0, 4096)), 'the established connection is unaffected');
    bystander.close();
    t.true(await stillServes(socket));
  }));

test('garbage during transmission closes that connection; others continue', (t) =>
  withServedRepo(async ({ socket, disk }) => {
    const bystander = await RawPeer.connect(socket);
    await bystander.go('alpha');
    const peer = await RawPeer.connect(socket);
    await peer.go('alpha');
    peer.write(randomBytes(28));
    t.true(await peer.closedByServer());
    const truncated = await RawPeer.connect(socket);
    await truncated.go('alpha');
    truncated.sendRequest(P.CMD_WRITE, 0, 65536, { payload: Buffer.alloc(100) }); // payload cut short
    truncated.socket.end();
    t.true(await truncated.closedByServer());
    t.true((await bystander.request(P.CMD_READ, 4096, 4096)).data!.equals(disk.subarray(4096, 8192)));
    bystander.close();
    t.true(await stillServes(socket));
  }));

test('a missing pack file: EIO to the client, a log line naming the file, and the server keeps running', (t) =>
  withServedRepo(async ({ repo, events }) => {
    const packs = join(repo.dir, 'packs');
    const pack = (await readdir(packs)).find((f) => f.endsWith('.pack'))!;
    await rm(join(packs, pack));
    // A fresh repository object, so no pack handle is cached from before the removal.
    const fresh = await Repository.open(repo.dir);
    const freshSocket = join(repo.dir, '..', 'fresh.sock');
    const server = await serveRepository(fresh, freshSocket, { onConnectionEvent: (event) => events.push(event) });
    try {
      const result = await execa('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4096', exportUri(freshSocket, 'alpha')], { reject: false });
      t.regex(result.stdout + result.stderr, /Input\/output error/);
      // A large read is answered in pieces: here the zero half is sent, then the failing half ends the
      // reply with an error chunk.
      const large = await execa('qemu-io', ['-r', '-f', 'raw', '-c', 'read 1M 2M', exportUri(freshSocket, 'alpha')], { reject: false });
      t.regex(large.stdout + large.stderr, /Input\/output error/);
      t.true(events.some((event) => event.kind === 'request-failed' && event.command === commandName(P.CMD_READ) && event.message.includes(pack) && event.message.includes('missing')), JSON.stringify(events));
      const zeros = await execa('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0 1M 64k', exportUri(freshSocket, 'alpha')]);
      t.notRegex(zeros.stdout, /fail/i, 'zero blocks still read');
    } finally {
      await server.close();
      await fresh.close();
    }
  }));
