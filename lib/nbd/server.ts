// An NBD server (fixed newstyle) for any ExportProvider: on a unix socket (mode 0600, removed on
// close) or on TCP (beyond loopback only with TLS). Many clients, each bounded (limits.ts); per
// connection, many requests in flight.
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { chmod, lstat, unlink, mkdir } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import { LazybootError } from '../base/errors.js';
import type { ExportProvider } from './export-provider.js';
import { BufferPool } from './buffer-pool.js';
import { Connection } from './connection.js';
import { resolveLimits, type NbdServerLimits } from './limits.js';
import { refuseConnection } from './refusal.js';
import { isLoopbackHost, type ServerTls } from './tls.js';

export type { ExportProvider } from './export-provider.js';
export type { NbdServerLimits } from './limits.js';

export interface NbdServerOptions {
  readonly exports: ExportProvider;
  readonly socketPath?: string;
  readonly listen?: { host: string; port: number };
  readonly log?: (line: string) => void;
  /** Connections, timeouts and bytes per connection (defaults in limits.ts). */
  readonly limits?: NbdServerLimits;
  /** TLS required of every client (NBD_OPT_STARTTLS); needed to listen beyond loopback. */
  readonly tls?: ServerTls;
  /** Idle reply buffers kept for reuse across connections (default 32 MiB). */
  readonly pooledBufferBytes?: number;
}

export interface NbdServer {
  /** What clients connect to: `nbd+unix:///?socket=/abs/path` or `nbd://HOST:PORT` (`nbds…` with TLS). */
  readonly uri: string;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** The server could not start listening. */
export class NbdListenFailed extends LazybootError {}

/** Beyond loopback, only with TLS: NBD itself authenticates nobody. */
export function checkListenAllowed(host: string, tls: boolean): void {
  if (tls || isLoopbackHost(host)) return;
  throw new NbdListenFailed(`listening on ${host} would let anyone who can reach it read every export, without authentication`, 'add TLS credentials (--tls-creds DIR or --tls-psk FILE) or listen on 127.0.0.1');
}

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  if (!options.socketPath === !options.listen) throw new NbdListenFailed('give exactly one of socketPath or listen');
  if (options.listen) checkListenAllowed(options.listen.host, options.tls !== undefined);
  const log = options.log ?? (() => {});
  const limits = resolveLimits(options.limits);
  const connections = new Set<Connection>();
  const refusing = new Set<Socket>();
  let connectionCount = 0;
  let lastRefusalLogAt = 0;
  let refusedSinceLog = 0;
  // Buffers are shared for reuse only; what each connection may hold is its own budget.
  const pool = new BufferPool({ budgetBytes: Number.POSITIVE_INFINITY, maxPooledBytes: options.pooledBufferBytes ?? 32 * 1024 * 1024 });

  // Keep-alive finds TCP peers that vanished without a word (a host powered off, a cut link).
  const server = createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 }, (socket) => {
    const id = ++connectionCount;
    socket.on('error', () => {}); // reported through the connection's outcome
    const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix socket';
    const connectionLog = (line: string): void => log(`connection ${id} (${peer}): ${line}`);
    if (connections.size >= limits.maxConnections) {
      // A flood of connections must not become a flood of log lines: one a second at most.
      const now = Date.now();
      if (now - lastRefusalLogAt >= 1000) {
        const more = refusedSinceLog > 0 ? ` (and ${refusedSinceLog} more refused since the last such line)` : '';
        connectionLog(`refused: ${connections.size} connections open, the most this server accepts${more}`);
        lastRefusalLogAt = now;
        refusedSinceLog = 0;
      } else {
        refusedSinceLog++;
      }
      refuseConnection(socket, refusing, `this server already has ${connections.size} connections open (its cap): try again later`);
      return;
    }
    const connection = new Connection(socket, { exports: options.exports, pool, limits, log: connectionLog, ...(options.tls ? { tls: options.tls } : {}) });
    connections.add(connection);
    void connection.serve().finally(() => connections.delete(connection));
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
    uri = `${options.tls ? 'nbds' : 'nbd'}+unix:///?socket=${socketPath}`;
  } else {
    const { host, port } = options.listen!;
    await listen(server, () => server.listen(port, host));
    const address = server.address();
    const boundPort = typeof address === 'object' && address ? address.port : port;
    uri = `${options.tls ? 'nbds' : 'nbd'}://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const connection of connections) connection.destroy();
      for (const socket of refusing) socket.destroy();
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
export async function removeStaleSocket(path: string): Promise<void> {
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
