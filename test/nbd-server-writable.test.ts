// A writable export through the same server: qemu-io and nbdcopy write, zero, trim and flush.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startNbdServer } from '../lib/nbd/server.js';
import type { ExportProvider } from '../lib/nbd/export-provider.js';
import * as P from '../lib/nbd/protocol.js';
import { MemoryBackend } from './helpers/memory-backend.js';
import { RawPeer } from './helpers/nbd-raw-peer.js';

const MiB = 1024 * 1024;

function provider(backend: MemoryBackend): ExportProvider {
  return {
    list: async () => [{ name: 'disk', description: 'writable test disk' }],
    open: async (name) => (name === 'disk' ? backend : undefined),
  };
}

function withWritableServer(body: (uri: string, backend: MemoryBackend, socket: string, dir: string) => Promise<void>) {
  return withDir(async ({ path: dir }) => {
    const backend = new MemoryBackend(8 * MiB);
    const socket = join(dir, 'rw.sock');
    const server = await startNbdServer({ exports: provider(backend), socketPath: socket });
    try {
      await body(`nbd+unix:///disk?socket=${socket}`, backend, socket, dir);
    } finally {
      await server.close();
    }
  }, { unsafeCleanup: true });
}

test('nbdinfo sees a writable export with flush, FUA, trim, zero and multi-conn', (t) =>
  withWritableServer(async (uri) => {
    const { stdout } = await execa('nbdinfo', [uri]);
    for (const line of ['is_read_only: false', 'can_flush: true', 'can_fua: true', 'can_trim: true', 'can_zero: true', 'can_multi_conn: true']) {
      t.true(stdout.includes(line), line);
    }
  }));

test('qemu-io write -P then read -P through the server; the backend holds the bytes', (t) =>
  withWritableServer(async (uri, backend) => {
    const write = await execa('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1M 256k', '-c', 'write -f -P 0x7e 3M 4k', '-c', 'flush', uri]);
    t.notRegex(write.stdout + write.stderr, /error|fail/i);
    t.true(backend.data.subarray(MiB, MiB + 256 * 1024).equals(Buffer.alloc(256 * 1024, 0x3c)));
    t.true(backend.data.subarray(3 * MiB, 3 * MiB + 4096).equals(Buffer.alloc(4096, 0x7e)));
    t.true(backend.fuaWrites >= 1, 'write -f sent FUA');
    t.true(backend.flushes >= 1);
    const read = await execa('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x3c 1M 256k', '-c', 'read -P 0x7e 3M 4k', '-c', 'read -P 0 0 1M', uri]);
    t.notRegex(read.stdout, /fail/i);
  }));

test('write zeroes and discard reach the backend; block status then shows the hole', (t) =>
  withWritableServer(async (uri, backend) => {
    backend.data.fill(0x55);
    await execa('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 8M', '-c', 'write -z 1M 64k', '-c', 'discard 2M 1M', uri]);
    t.true(backend.data.subarray(MiB, MiB + 65536).equals(Buffer.alloc(65536)));
    t.true(backend.data.subarray(2 * MiB, 3 * MiB).equals(Buffer.alloc(MiB)));
    const { stdout } = await execa('nbdinfo', ['--map', uri]);
    t.regex(stdout, new RegExp(`^\\s*${2 * MiB}\\s+${MiB}\\s+3\\s+hole,zero`, 'm'));
  }));

test('nbdcopy writes a whole file into the export with many requests in flight', (t) =>
  withWritableServer(async (uri, backend, _socket, dir) => {
    const source = randomBytes(8 * MiB);
    const file = join(dir, 'src.raw');
    await writeFile(file, source);
    await execa('nbdcopy', ['--requests=64', '--request-size=131072', file, uri]);
    t.true(backend.data.equals(source));
  }));

test('writes past the end get ENOSPC and the connection stays usable', (t) =>
  withWritableServer(async (_uri, backend, socket) => {
    const peer = await RawPeer.connect(socket);
    try {
      await peer.go('disk');
      t.is((await peer.request(P.CMD_WRITE, backend.size - 10, 100, { payload: Buffer.alloc(100, 1) })).error, P.NBD_ENOSPC);
      t.is((await peer.request(P.CMD_WRITE, 0, 100, { payload: Buffer.alloc(100, 9) })).error, 0);
      t.is((await peer.request(P.CMD_FLUSH, 0, 0)).error, 0);
      t.true(backend.data.subarray(0, 100).equals(Buffer.alloc(100, 9)));
    } finally {
      peer.close();
    }
  }));
