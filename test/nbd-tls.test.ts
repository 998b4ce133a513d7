// TLS (NBD_OPT_STARTTLS) between real peers: `lazyboot repo serve --tls-creds/--tls-psk` with
// qemu-img, nbdinfo and nbdcopy as clients; our client (`disk serve --from nbds://…`) against our
// server and against qemu-nbd; and every refusal in both directions, each with a clear message.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { readFile, mkdir, copyFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdClient } from '../lib/nbd/client.js';
import type { ConnectionEvent } from '../lib/nbd/connection-events.js';
import { connectWhenUp } from './helpers/connect-when-up.js';
import { makeImage, type TestImage } from './cor-fixtures.js';
import { makePskFile, makeX509Credentials } from './helpers/tls-certs.js';
import { startServing, MiB, type ServedProcess } from './helpers/served-process.js';
import { CLI as BIN } from './helpers/cli-path.js';

interface Setup {
  dir: string;
  creds: string;
  image: TestImage;
}

function withCredentials(body: (setup: Setup) => Promise<void>, size = 4 * MiB + 4096) {
  return withDir(async ({ path: dir }) => {
    const creds = join(dir, 'creds');
    await makeX509Credentials(creds);
    const image = await makeImage(dir, 'alpha', { size });
    await body({ dir, creds, image });
  }, { unsafeCleanup: true });
}

async function serveTls(setup: Setup, credentials: string[]): Promise<{ server: ServedProcess; port: number }> {
  const server = await startServing(['repo', 'serve', '--repo', setup.image.repoDir, '--listen', '127.0.0.1:0', ...credentials]);
  return { server, port: Number(/:(\d+)$/.exec(server.uri)![1]) };
}

function qemuTlsArgs(creds: string, port: number, kind = 'tls-creds-x509', extra = ''): string[] {
  return ['--object', `${kind},id=tls0,dir=${creds},endpoint=client${extra}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=alpha,tls-creds=tls0`];
}

test('x509: qemu-img info/convert, nbdinfo and nbdcopy read the image over TLS', (t) => withCredentials(async (setup) => {
  const { server, port } = await serveTls(setup, ['--tls-creds', setup.creds]);
  try {
    t.regex(server.uri, /^nbds:\/\/127\.0\.0\.1:\d+$/);
    const info = await execa('qemu-img', ['info', ...qemuTlsArgs(setup.creds, port)]);
    t.regex(info.stdout, /virtual size: .*\(4198400 bytes\)/);
    const converted = join(setup.dir, 'converted.raw');
    await execa('qemu-img', ['convert', '-O', 'raw', ...qemuTlsArgs(setup.creds, port), converted]);
    t.true((await readFile(converted)).equals(setup.image.content));
    const uri = `nbds://127.0.0.1:${port}/alpha?tls-certificates=${setup.creds}`;
    t.regex((await execa('nbdinfo', [uri])).stdout, /with TLS/);
    const copied = join(setup.dir, 'copied.raw');
    await execa('nbdcopy', [uri, copied]);
    t.true((await readFile(copied)).equals(setup.image.content));
    t.true(await server.waitForLog(/export "alpha" \(read-only, structured replies, TLS\)/), server.stderr()); // the log line may arrive after the outcome it reports
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}));

test('x509: clients without TLS, with another CA or without a client certificate are refused; the server goes on', (t) => withCredentials(async (setup) => {
  const { server, port } = await serveTls(setup, ['--tls-creds', setup.creds]);
  try {
    const plain = await execa('qemu-img', ['info', `nbd://127.0.0.1:${port}/alpha`], { reject: false });
    t.not(plain.exitCode, 0);
    t.regex(plain.stderr, /TLS negotiation required|server requires TLS/i);
    const ours = await execa('node', [BIN, 'disk', 'serve', 'alpha', '--disk', join(setup.dir, 'd.raw'), '--from', `nbd://127.0.0.1:${port}`, '--socket', join(setup.dir, 'd.sock')], { reject: false });
    t.is(ours.exitCode, 1);
    t.regex(ours.stderr, /the server requires TLS \(connect with an nbds:\/\/ URI and --tls-creds DIR/);
    t.is(ours.stderr.trim().split('\n').length, 1, 'one line');
    const otherCa = await execa('nbdinfo', [`nbds://127.0.0.1:${port}/alpha?tls-certificates=${join(setup.creds, 'other-ca')}`], { reject: false });
    t.not(otherCa.exitCode, 0, 'a server certificate from another CA is not trusted');
    // A client with the right CA but no certificate of its own: the server requires one.
    const caOnly = join(setup.dir, 'ca-only');
    await mkdir(caOnly);
    await copyFile(join(setup.creds, 'ca-cert.pem'), join(caOnly, 'ca-cert.pem'));
    const anonymous = await execa('nbdinfo', [`nbds://127.0.0.1:${port}/alpha?tls-certificates=${caOnly}`], { reject: false });
    t.not(anonymous.exitCode, 0, 'a client without a certificate is refused');
    t.true(await server.waitForLog(/TLS: .*certificate/i), server.stderr()); // the log line may arrive after the outcome it reports
    const fine = await execa('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/alpha?tls-certificates=${setup.creds}`]);
    t.is(Number(fine.stdout.trim()), setup.image.content.length);
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}));

test('disk serve --from nbds:// --tls-creds fetches over TLS (main thread and fetch worker); the copy-on-read disk reads as the image', (t) => withCredentials(async (setup) => {
  const { server, port } = await serveTls(setup, ['--tls-creds', setup.creds]);
  const socket = join(setup.dir, 'disk.sock');
  const disk = await startServing(['disk', 'serve', 'alpha', '--disk', join(setup.dir, 'disk.raw'), '--from', `nbds://127.0.0.1:${port}`, '--tls-creds', setup.creds, '--socket', socket]);
  try {
    const out = join(setup.dir, 'out.raw');
    await execa('nbdcopy', [`nbd+unix:///disk?socket=${socket}`, out]);
    t.true((await readFile(out)).equals(setup.image.content));
    // The manifest and the image's blocks came over TLS (the image through the fetch worker's
    // connection for reads of 4 blocks and more, and the main thread's for single blocks, if any).
    t.true(await server.waitForLog(/export "manifest:alpha(@1)?" \(read-only, TLS\)/), server.stderr()); // the log line may arrive after the outcome it reports
    t.true(await server.waitForLog(/export "alpha@1" \(read-only, TLS\)/), server.stderr()); // the log line may arrive after the outcome it reports
  } finally {
    t.is(await disk.stop(), 0, disk.stderr());
    t.is(await server.stop(), 0, server.stderr());
  }
  // 72 MiB: the fetch worker starts at 64 MiB still to fetch, and opens its own nbds:// connections.
}, 72 * MiB));

test('our client against qemu-nbd: reads over TLS, and says so when the server offers no TLS', (t) => withCredentials(async (setup) => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const tlsServer = execa('qemu-nbd', ['-r', '-f', 'raw', '-t', '-b', '127.0.0.1', '-p', String(port), '-x', 'alpha',
    '--object', `tls-creds-x509,id=tls0,dir=${setup.creds},endpoint=server`, '--tls-creds', 'tls0', setup.image.rawPath], { reject: false });
  try {
    const client = await connectWhenUp(`nbds://127.0.0.1:${port}/alpha?tls-certificates=${setup.creds}`);
    t.true((await client.read(0, setup.image.content.length)).equals(setup.image.content));
    await client.close();
  } finally {
    tlsServer.kill();
    await tlsServer;
  }
  const plainServer = execa('qemu-nbd', ['-r', '-f', 'raw', '-t', '-b', '127.0.0.1', '-p', String(port + 1), '-x', 'alpha', setup.image.rawPath], { reject: false });
  try {
    const error = await t.throwsAsync(connectWhenUp(`nbds://127.0.0.1:${port + 1}/alpha?tls-certificates=${setup.creds}`));
    t.regex(error!.message, /the server does not offer TLS/);
  } finally {
    plainServer.kill();
    await plainServer;
  }
}));

test('PSK: qemu-img (tls-creds-psk), nbdinfo and our client read over TLS with a keys.psk file', (t) => withCredentials(async (setup) => {
  const pskDir = join(setup.dir, 'psk');
  const keys = await makePskFile(pskDir, 'lazyboot');
  const { server, port } = await serveTls(setup, ['--tls-psk', keys]);
  try {
    const info = await execa('qemu-img', ['info', ...qemuTlsArgs(pskDir, port, 'tls-creds-psk', ',username=lazyboot')]);
    t.regex(info.stdout, /4198400 bytes/);
    const size = await execa('nbdinfo', ['--size', `nbds://lazyboot@127.0.0.1:${port}/alpha?tls-psk-file=${keys}`]);
    t.is(Number(size.stdout.trim()), setup.image.content.length);
    const client = await NbdClient.connect(`nbds://lazyboot@127.0.0.1:${port}/alpha?tls-psk-file=${keys}`);
    t.true((await client.read(0, 65536)).equals(setup.image.content.subarray(0, 65536)));
    await client.close();
    const wrongKey = await makePskFile(join(setup.dir, 'wrong'), 'lazyboot');
    const refused = await execa('nbdinfo', [`nbds://lazyboot@127.0.0.1:${port}/alpha?tls-psk-file=${wrongKey}`], { reject: false });
    t.not(refused.exitCode, 0, 'another key is refused');
  } finally {
    t.is(await server.stop(), 0, server.stderr());
  }
}));

test('--listen beyond loopback without TLS is refused in one line; bad TLS flags too', async (t) => withDir(async ({ path: dir }) => {
  const run = (args: string[]) => execa('node', [BIN, 'repo', 'serve', '--repo', join(dir, 'repo'), ...args], { reject: false });
  const open = await run(['--listen', '0.0.0.0:0']);
  t.is(open.exitCode, 1);
  t.false(await access(join(dir, 'repo')).then(() => true, () => false), 'refused before the repository is touched');
  t.is(open.stderr.trim().split('\n').length, 1);
  t.regex(open.stderr, /listening on 0\.0\.0\.0 would let anyone who can reach it read every export, without authentication: add TLS credentials/);
  const missing = await run(['--listen', '0.0.0.0:0', '--tls-creds', join(dir, 'nowhere')]);
  t.is(missing.exitCode, 1);
  t.regex(missing.stderr, /cannot read .*nowhere\/ca-cert\.pem \(ENOENT\): a server x509 directory holds ca-cert\.pem, server-cert\.pem and server-key\.pem/);
  const both = await run(['--tls-creds', dir, '--tls-psk', join(dir, 'k')]);
  t.not(both.exitCode, 0);
}, { unsafeCleanup: true }));

test('over TLS too, a client that stops reading is closed by the stall timeout', (t) => withCredentials(async (setup) => {
  const { startNbdServer } = await import('../lib/nbd/server.js');
  const { loadServerTls } = await import('../lib/nbd/tls.js');
  const { MemoryBackend } = await import('./helpers/memory-backend.js');
  const backend = new MemoryBackend(8 * MiB);
  const events: ConnectionEvent[] = [];
  const server = await startNbdServer({
    listen: { host: '127.0.0.1', port: 0 },
    tls: await loadServerTls({ x509Dir: setup.creds }),
    limits: { stallTimeoutMs: 1000 },
    onConnectionEvent: (event) => events.push(event),
    exports: { async list() { return [{ name: 'm' }]; }, async open() { return backend; } },
  });
  try {
    const client = await NbdClient.connect(`${server.uri}/m?tls-certificates=${setup.creds}`);
    // Our client has no "stop reading" switch: pause its TLS socket by hand (test only).
    (client as unknown as { socket: { pause(): void } }).socket.pause();
    const reads = Array.from({ length: 32 }, () => client.read(0, 4 * MiB).then(() => 'read', () => 'failed'));
    // A paused client does not even see the close: watch the server's events (bounded wait).
    const stalled = (): boolean => events.some((event) => event.kind === 'closing' && event.reason === 'stall-timeout');
    for (let i = 0; i < 600 && !stalled(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    t.true(stalled(), JSON.stringify(events));
    t.true(events.some((event) => event.kind === 'opened' && event.tls), 'the connection was opened over TLS');
    client.destroy('test over');
    t.true((await Promise.all(reads)).includes('failed'));
  } finally {
    await server.close();
  }
}));
