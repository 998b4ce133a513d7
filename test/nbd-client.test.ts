// NBD client against real servers (qemu-nbd, nbdkit): reads, writes, flush, pipelining, errors.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NbdClient, parseNbdUri, formatNbdUri, withTlsCredentials } from '../lib/nbd/client.js';
import { NbdConnectError } from '../lib/nbd/errors.js';
import { BlockError } from '../lib/block/backend.js';
import { connectWhenUp } from './helpers/connect-when-up.js';

/** Runs qemu-nbd on `file` for the duration of `body` (which connects with connectWhenUp). */
async function withQemuNbd<T>(file: string, socket: string, args: string[], body: () => Promise<T>): Promise<T> {
  const server = execa('qemu-nbd', ['-k', socket, '-f', 'raw', '--shared=8', ...args, file], { reject: false });
  try {
    return await body();
  } finally {
    server.kill('SIGTERM');
    await server;
  }
}

test('URIs parse into socket/host targets and format back', (t) => {
  t.deepEqual(parseNbdUri('nbd+unix:///disk?socket=/tmp/x.sock'), { socketPath: '/tmp/x.sock', exportName: 'disk' });
  t.deepEqual(parseNbdUri('nbd://127.0.0.1:10900/demo@2'), { host: '127.0.0.1', port: 10900, exportName: 'demo@2' });
  t.deepEqual(parseNbdUri('nbd+unix:///?socket=/s'), { socketPath: '/s', exportName: '' });
  t.is(formatNbdUri({ socketPath: '/s', exportName: '' }, 'manifest:demo@2'), 'nbd+unix:///manifest:demo@2?socket=/s');
});

test('nbds:// and nbds+unix:// carry TLS credentials as libnbd writes them; --tls-creds fills in the ones that name none', (t) => {
  t.deepEqual(parseNbdUri('nbds://repo.example:10809/demo?tls-certificates=/etc/pki/lazyboot'),
    { host: 'repo.example', port: 10809, exportName: 'demo', tls: { x509Dir: '/etc/pki/lazyboot' } });
  t.deepEqual(parseNbdUri('nbds+unix:///?socket=/s&tls-certificates=/c'), { socketPath: '/s', exportName: '', tls: { x509Dir: '/c' } });
  t.deepEqual(parseNbdUri('nbds://alice@h:1/x?tls-psk-file=/k'), { host: 'h', port: 1, exportName: 'x', tls: { pskFile: '/k', pskUser: 'alice' } });
  t.deepEqual(parseNbdUri('nbds://h:1'), { host: 'h', port: 1, exportName: '', tls: {} }, 'TLS without credentials: refused at connect with a hint');
  const target = parseNbdUri('nbds://[::1]:10809/?tls-certificates=/c');
  t.is(formatNbdUri(target, 'manifest:demo@2'), 'nbds://[::1]:10809/manifest:demo@2?tls-certificates=/c');
  t.is(withTlsCredentials('nbds://h:1', { x509Dir: '/c' }), 'nbds://h:1/?tls-certificates=/c');
  t.is(withTlsCredentials('nbds://h:1/?tls-certificates=/mine', { x509Dir: '/c' }), 'nbds://h:1/?tls-certificates=/mine', 'the URI\'s own credentials win');
  t.is(withTlsCredentials('nbd://h:1', { x509Dir: '/c' }), 'nbd://h:1', 'plain NBD stays plain');
  t.is(withTlsCredentials('/srv/repo', { x509Dir: '/c' }), '/srv/repo');
});

test('nbds:// without credentials, or with a directory lacking ca-cert.pem, is one clear error before connecting', async (t) => {
  const none = await t.throwsAsync(NbdClient.connect('nbds://127.0.0.1:9/x'), { instanceOf: NbdConnectError });
  t.regex(none!.message, /an nbds:\/\/ repository needs TLS credentials/);
  const missing = await t.throwsAsync(NbdClient.connect('nbds://127.0.0.1:9/x?tls-certificates=/nonexistent'), { instanceOf: NbdConnectError });
  t.regex(missing!.message, /cannot read \/nonexistent\/ca-cert\.pem \(ENOENT\)/);
});

test('reads from qemu-nbd equal the file, with many requests in flight', (t) => withDir(async ({ path: dir }) => {
  const file = join(dir, 'disk.raw');
  const content = randomBytes(4 * 1024 * 1024 + 512);
  await writeFile(file, content);
  const socket = join(dir, 'nbd.sock');
  await withQemuNbd(file, socket, ['--read-only'], async () => {
    const client = await connectWhenUp(`nbd+unix:///?socket=${socket}`);
    try {
      t.is(client.size, content.length);
      t.false(client.capabilities.write);
      const offsets = Array.from({ length: 64 }, (_, i) => i * 65536);
      const parts = await Promise.all(offsets.map((offset) => client.read(offset, 65536)));
      t.true(Buffer.concat(parts).equals(content.subarray(0, 64 * 65536)));
      t.true((await client.read(0, content.length)).equals(content));
      // qemu-nbd refuses writes to a read-only export: an error reply, the connection lives on.
      const error = await t.throwsAsync(client.write(0, Buffer.alloc(512)), { instanceOf: BlockError });
      t.truthy(error);
      t.true((await client.read(512, 512)).equals(content.subarray(512, 1024)));
    } finally {
      await client.close();
    }
  });
}, { unsafeCleanup: true }));

test('writes, write-zeroes, trim and flush reach the file through qemu-nbd', (t) => withDir(async ({ path: dir }) => {
  const file = join(dir, 'disk.raw');
  await writeFile(file, Buffer.alloc(1024 * 1024, 0x11));
  const socket = join(dir, 'nbd.sock');
  await withQemuNbd(file, socket, ['--cache=none'], async () => {
    const client = await connectWhenUp({ socketPath: socket, exportName: '' });
    try {
      t.true(client.capabilities.write && client.capabilities.flush && client.capabilities.writeZeroes);
      const data = randomBytes(8192);
      await client.write(4096, data, { fua: true });
      await client.writeZeroes(65536, 65536);
      await client.flush();
      t.true((await client.read(4096, 8192)).equals(data));
      t.true((await client.read(65536, 65536)).equals(Buffer.alloc(65536)));
    } finally {
      await client.close();
    }
  });
  const bytes = await readFile(file);
  t.is(bytes[4095], 0x11);
  t.true(bytes.subarray(65536, 131072).equals(Buffer.alloc(65536)));
}, { unsafeCleanup: true }));

test('nbdkit named exports: the right one is selected, a wrong name is a clear error', (t) => withDir(async ({ path: dir }) => {
  const socket = join(dir, 'kit.sock');
  // The memory plugin with a size; exportname filter restricts names to 'alpha'.
  const server = execa('nbdkit', ['-f', '-U', socket, '--filter=exportname', 'memory', '1M', 'exportname=alpha', 'exportname-strict=true'], { reject: false });
  try {
    const client = await connectWhenUp(`nbd+unix:///alpha?socket=${socket}`);
    t.is(client.size, 1024 * 1024);
    await client.write(0, Buffer.from('hello'));
    t.is((await client.read(0, 5)).toString(), 'hello');
    await client.close();
    const error = await t.throwsAsync(NbdClient.connect(`nbd+unix:///beta?socket=${socket}`), { instanceOf: NbdConnectError });
    t.regex(error!.message, /beta/);
  } finally {
    server.kill('SIGTERM');
    await server;
  }
}, { unsafeCleanup: true }));

test('no server: connect fails with NbdConnectError naming the URI', async (t) => {
  const error = await t.throwsAsync(NbdClient.connect('nbd+unix:///?socket=/nonexistent/lazyboot.sock'), { instanceOf: NbdConnectError });
  t.regex(error!.message, /nonexistent/);
});

test('server killed with requests in flight: they fail with EIO, no hang', (t) => withDir(async ({ path: dir }) => {
  const socket = join(dir, 'kit.sock');
  // 500 ms per read, so requests are in flight when the server dies.
  const server = execa('nbdkit', ['-f', '-U', socket, '--filter=delay', 'memory', '1M', 'rdelay=500ms'], { reject: false });
  try {
    const client = await connectWhenUp({ socketPath: socket, exportName: '' });
    const reads = [client.read(0, 4096), client.read(4096, 4096)];
    await sleep(100);
    server.kill('SIGKILL');
    for (const read of reads) await t.throwsAsync(read, { instanceOf: BlockError, message: /lost|closed/ });
    t.true(client.isBroken);
    await client.close();
  } finally {
    server.kill('SIGKILL');
    await server;
  }
}, { unsafeCleanup: true }));
