// An NBD server (fixed newstyle) for any ExportProvider: on a unix socket (mode 0600, removed on
// close) or on TCP. Many clients; per connection, many requests in flight.
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { chmod, lstat, unlink, mkdir } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import { LazybootError } from '../errors.js';
import { ByteQueue, ConnectionClosed } from './byte-queue.js';
import { Handshake, HandshakeFailed } from './handshake.js';
import { Transmission } from './transmission.js';
import type { ExportProvider } from './export-provider.js';
import { BufferPool } from './buffer-pool.js';

export type { ExportProvider } from './export-provider.js';

export interface NbdServerOptions {
  readonly exports: ExportProvider;
  readonly socketPath?: string;
  readonly listen?: { host: string; port: number };
  readonly log?: (line: string) => void;
  /**
   * Bytes of read-reply buffers held at once across all connections (default 32 MiB: 8 fetches of
   * 4 MiB from a copy-on-read device); reads beyond it wait. Smaller keeps the process smaller.
   */
  readonly replyBufferBudget?: number;
}

export interface NbdServer {
  /** What clients connect to: `nbd+unix:///?socket=/abs/path` or `nbd://HOST:PORT`. */
  readonly uri: string;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const HANDSHAKE_TIMEOUT_MS = 30_000;

/** The server could not start listening. */
export class NbdListenFailed extends LazybootError {}

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  if (!options.socketPath === !options.listen) throw new NbdListenFailed('give exactly one of socketPath or listen');
  const log = options.log ?? (() => {});
  const sockets = new Set<Socket>();
  let connectionCount = 0;
  const budget = options.replyBufferBudget ?? 32 * 1024 * 1024;
  const pool = new BufferPool({ budgetBytes: budget, maxPooledBytes: budget });

  const server = createServer({ noDelay: true }, (socket) => {
    const id = ++connectionCount;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // reported through serveConnection's outcome
    const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix socket';
    void serveConnection(socket, options.exports, pool, (line) => log(`connection ${id} (${peer}): ${line}`));
  });

  let uri: string;
  let socketPath: string | undefined;
  if (options.socketPath) {
    socketPath = resolvePath(options.socketPath);
    await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
    await removeStaleSocket(socketPath);
    // The umask makes the socket 0600 from the moment it exists; chmod again to be sure.
    const previousUmask = process.umask(0o177);
    try {
      await listen(server, () => server.listen(socketPath));
    } finally {
      process.umask(previousUmask);
    }
    await chmod(socketPath, 0o600);
    uri = `nbd+unix:///?socket=${socketPath}`;
  } else {
    const { host, port } = options.listen!;
    await listen(server, () => server.listen(port, host));
    const address = server.address();
    const boundPort = typeof address === 'object' && address ? address.port : port;
    uri = `nbd://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
      if (socketPath) await unlink(socketPath).catch(() => {});
    })();
    return closing;
  };
  return { uri, close, [Symbol.asyncDispose]: close };
}

function listen(server: Server, start: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(new NbdListenFailed(`cannot listen: ${error.code ?? error.message}`, error.code === 'EADDRINUSE' ? 'is another server running there?' : undefined, { cause: error }));
    };
    server.once('error', onError);
    start();
    server.once('listening', () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Removes a socket file nobody listens on; refuses if a server answers there. */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    const stat = await lstat(path);
    if (!stat.isSocket()) throw new NbdListenFailed(`${path} exists and is not a socket`, 'choose another --socket path');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new NbdListenFailed(`a server is already listening on ${path}`, 'stop it or choose another --socket path');
  await unlink(path);
}

async function serveConnection(socket: Socket, exports: ExportProvider, pool: BufferPool, log: (line: string) => void): Promise<void> {
  const queue = new ByteQueue(socket);
  // A peer that connects and then says nothing must not hold a connection forever.
  socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => {
    log(`handshake timed out after ${HANDSHAKE_TIMEOUT_MS / 1000} s`);
    socket.destroy();
  });
  try {
    const session = await new Handshake(socket, queue, exports).run();
    socket.setTimeout(0);
    if (!session) {
      log('client aborted the handshake');
      socket.end();
      return;
    }
    const mode = session.backend.capabilities.write ? 'read-write' : 'read-only';
    log(`export ${JSON.stringify(session.exportName)} (${mode}${session.structuredReplies ? ', structured replies' : ''})`);
    await new Transmission(socket, queue, session, log, pool).run();
    socket.end();
  } catch (error) {
    if (!(error instanceof ConnectionClosed && error.had === 0)) {
      const phase = error instanceof HandshakeFailed ? 'handshake failed' : 'dropped';
      log(`${phase}: ${(error as Error).message}`);
    }
    socket.destroy();
  }
}
