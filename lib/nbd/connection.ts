// One client connection of the NBD server, from accept to close: the handshake under an absolute
// deadline, then transmission with its own byte budget, an idle timer and a watchdog on output
// that stops moving. Whatever a client does, this connection alone pays for it.
import type { Socket } from 'node:net';
import { ByteQueue, ConnectionClosed } from './byte-queue.js';
import { Handshake, HandshakeFailed, HANDSHAKE_READ_AHEAD_BYTES } from './handshake.js';
import { Transmission } from './transmission.js';
import type { ExportProvider } from './export-provider.js';
import type { BufferPool } from './buffer-pool.js';
import { ByteBudget } from './byte-budget.js';
import { OutputWatchdog } from './output-watchdog.js';
import type { ResolvedLimits } from './limits.js';
import { startServerTls, type ServerTls } from './tls.js';
import type { ConnectionEventDetail } from './connection-events.js';

/** Read-ahead in transmission: pipelined requests; a write's payload is read whatever its size. */
const TRANSMISSION_READ_AHEAD_BYTES = 1024 * 1024;

export interface ConnectionContext {
  readonly exports: ExportProvider;
  readonly pool: BufferPool;
  readonly limits: ResolvedLimits;
  readonly tls?: ServerTls;
  /** What happens to this connection (the server adds its number and peer). */
  readonly report: (event: ConnectionEventDetail) => void;
}

export class Connection {
  /** The socket in use: the accepted one, then the TLS socket after STARTTLS. */
  private socket: Socket;

  constructor(private readonly accepted: Socket, private readonly context: ConnectionContext) {
    this.socket = accepted;
  }

  destroy(): void {
    this.socket.destroy();
    this.accepted.destroy();
  }

  async serve(): Promise<void> {
    const { limits, report } = this.context;
    const watchdog = new OutputWatchdog(this.accepted, limits.stallTimeoutMs, (seconds) => {
      report({ kind: 'closing', reason: 'stall-timeout', seconds });
      this.destroy();
    });
    // An absolute deadline: a client that trickles bytes must not hold a connection forever.
    const deadline = setTimeout(() => {
      report({ kind: 'closing', reason: 'handshake-timeout', seconds: limits.handshakeTimeoutMs / 1000 });
      this.destroy();
    }, limits.handshakeTimeoutMs);
    let queue = new ByteQueue(this.accepted, HANDSHAKE_READ_AHEAD_BYTES);
    try {
      const handshake = new Handshake(this.accepted, queue, this.context.exports, {
        maxOptions: limits.maxOptions,
        ...(this.context.tls ? { startTls: (socket: Socket) => this.startTls(socket, watchdog) } : {}),
      });
      const session = await handshake.run();
      clearTimeout(deadline);
      queue = handshake.queue;
      if (!session) {
        report({ kind: 'handshake-aborted' });
        this.socket.end();
        return;
      }
      queue.setHighWater(TRANSMISSION_READ_AHEAD_BYTES);
      report({ kind: 'opened', exportName: session.exportName, writable: session.backend.capabilities.write, structuredReplies: session.structuredReplies, tls: this.context.tls !== undefined });
      const budget = new ByteBudget(limits.connectionBufferBytes);
      const transmission = new Transmission(this.socket, queue, session, report, this.context.pool, budget);
      if (limits.idleTimeoutMs > 0) {
        // Node's socket timeout counts time without traffic and fires again after more silence
        // (a listener, not setTimeout's one-shot callback): a request still running is not idle.
        this.socket.setTimeout(limits.idleTimeoutMs);
        this.socket.on('timeout', () => {
          if (transmission.busy) return;
          report({ kind: 'closing', reason: 'idle-timeout', seconds: limits.idleTimeoutMs / 1000 });
          this.destroy();
        });
      }
      await transmission.run();
      this.socket.end();
    } catch (error) {
      if (!(error instanceof ConnectionClosed && error.had === 0)) {
        report({ kind: 'ended', phase: error instanceof HandshakeFailed ? 'handshake' : 'transmission', message: (error as Error).message });
      }
      this.destroy();
    } finally {
      clearTimeout(deadline);
      watchdog.stop();
    }
  }

  private startTls(socket: Socket, watchdog: OutputWatchdog): Socket {
    const secure = startServerTls(socket, this.context.tls!);
    secure.on('error', (error) => this.context.report({ kind: 'tls-error', message: error.message }));
    this.socket = secure;
    watchdog.follow(secure);
    return secure;
  }
}
