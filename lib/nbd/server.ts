// An NBD server (fixed newstyle) for any ExportProvider: on a unix socket (mode 0600, removed on
// close) or on TCP (beyond loopback only with TLS). Many clients, each bounded (limits.ts); per
// connection, many requests in flight.
import { createServer, type Socket } from 'node:net';
import { unlink } from 'node:fs/promises';
import { hostPort, listenPrivately } from '../base/listen.js';
import type { ExportProvider } from './export-provider.js';
import { BufferPool } from './buffer-pool.js';
import { Connection } from './connection.js';
import { resolveLimits, type NbdServerLimits } from './limits.js';
import { refuseConnection } from './refusal.js';
import { isLoopbackHost, type ServerTls } from './tls.js';
import { NbdListenFailed } from './errors.js';
import { describeConnectionEvent, type ConnectionEvent, type ConnectionEventDetail } from './connection-events.js';

export type { ExportProvider } from './export-provider.js';
export type { NbdServerLimits } from './limits.js';
export type { ConnectionEvent } from './connection-events.js';

export interface NbdServerOptions {
  readonly exports: ExportProvider;
  readonly socketPath?: string;
  readonly listen?: { host: string; port: number };
  readonly log?: (line: string) => void;
  /**
   * What happens to each client connection (opened, refused, closed, a request failed). Without
   * it each event is a line of `log` (describeConnectionEvent).
   */
  readonly onConnectionEvent?: (event: ConnectionEvent) => void;
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

/** Beyond loopback, only with TLS: NBD itself authenticates nobody. */
export function checkListenAllowed(host: string, tls: boolean): void {
  if (tls || isLoopbackHost(host)) return;
  throw new NbdListenFailed(`listening on ${host} would let anyone who can reach it read every export, without authentication`, 'add TLS credentials (--tls-creds DIR or --tls-psk FILE) or listen on 127.0.0.1');
}

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  if (!options.socketPath === !options.listen) throw new NbdListenFailed('give exactly one of socketPath or listen');
  if (options.listen) checkListenAllowed(options.listen.host, options.tls !== undefined);
  const log = options.log ?? (() => {});
  const onConnectionEvent = options.onConnectionEvent ?? ((event: ConnectionEvent) => log(describeConnectionEvent(event)));
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
    const report = (event: ConnectionEventDetail): void => onConnectionEvent({ ...event, connection: id, peer });
    if (connections.size >= limits.maxConnections) {
      // A flood of connections must not become a flood of log lines: one a second at most.
      const now = Date.now();
      if (now - lastRefusalLogAt >= 1000) {
        report({ kind: 'refused', openConnections: connections.size, refusedSinceLast: refusedSinceLog });
        lastRefusalLogAt = now;
        refusedSinceLog = 0;
      } else {
        refusedSinceLog++;
      }
      refuseConnection(socket, refusing, `this server already has ${connections.size} connections open (its cap): try again later`);
      return;
    }
    const connection = new Connection(socket, { exports: options.exports, pool, limits, report, ...(options.tls ? { tls: options.tls } : {}) });
    connections.add(connection);
    void connection.serve().finally(() => connections.delete(connection));
  });

  const { socketPath, host, port } = await listenPrivately(server, options.socketPath ? { socketPath: options.socketPath } : options.listen!,
    (message, hint, errorOptions) => new NbdListenFailed(message, hint, errorOptions));
  const scheme = options.tls ? 'nbds' : 'nbd';
  const uri = socketPath ? `${scheme}+unix:///?socket=${socketPath}` : `${scheme}://${hostPort(host!, port!)}`;

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
