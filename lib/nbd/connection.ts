// One client connection of the NBD server, from accept to close: the handshake under an absolute
// deadline, then transmission with its own byte budget, an idle timer and a watchdog on output
// that stops moving. Whatever a client does, this connection alone pays for it.
import type { Socket } from 'node:net';
import { ByteQueue, ConnectionClosed } from './byte-queue.js';
import { Handshake, HandshakeFailed, HANDSHAKE_READ_AHEAD_BYTES, quoteName } from './handshake.js';
import { Transmission } from './transmission.js';
import type { ExportProvider } from './export-provider.js';
import type { BufferPool } from './buffer-pool.js';
import { ByteBudget } from './byte-budget.js';
import { OutputWatchdog } from './output-watchdog.js';
import type { ResolvedLimits } from './limits.js';
import { startServerTls, type ServerTls } from './tls.js';

/** Read-ahead in transmission: pipelined requests; a write's payload is read whatever its size. */
const TRANSMISSION_READ_AHEAD_BYTES = 1024 * 1024;

export interface ConnectionContext {
  readonly exports: ExportProvider;
  readonly pool: BufferPool;
  readonly limits: ResolvedLimits;
  readonly tls?: ServerTls;
  readonly log: (line: string) => void;
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
    const { limits, log } = this.context;
    const watchdog = new OutputWatchdog(this.accepted, limits.stallTimeoutMs, (seconds) => {
      log(`client has not read its replies for ${seconds} s: closing (stall timeout)`);
      this.destroy();
    });
    // An absolute deadline: a client that trickles bytes must not hold a connection forever.
    const deadline = setTimeout(() => {
      log(`handshake not finished after ${limits.handshakeTimeoutMs / 1000} s: closing`);
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
        log('client aborted the handshake');
        this.socket.end();
        return;
      }
      queue.setHighWater(TRANSMISSION_READ_AHEAD_BYTES);
      const mode = session.backend.capabilities.write ? 'read-write' : 'read-only';
      log(`export ${quoteName(session.exportName)} (${mode}${session.structuredReplies ? ', structured replies' : ''}${this.context.tls ? ', TLS' : ''})`);
      const budget = new ByteBudget(limits.connectionBufferBytes);
      const transmission = new Transmission(this.socket, queue, session, log, this.context.pool, budget);
      if (limits.idleTimeoutMs > 0) {
        // Node's socket timeout counts time without traffic and fires again after more silence
        // (a listener, not setTimeout's one-shot callback): a request still running is not idle.
        this.socket.setTimeout(limits.idleTimeoutMs);
        this.socket.on('timeout', () => {
          if (transmission.busy) return;
          log(`idle for ${limits.idleTimeoutMs / 1000} s: closing`);
          this.destroy();
        });
      }
      await transmission.run();
      this.socket.end();
    } catch (error) {
      if (!(error instanceof ConnectionClosed && error.had === 0)) {
        const phase = error instanceof HandshakeFailed ? 'handshake failed' : 'dropped';
        log(`${phase}: ${(error as Error).message}`);
      }
      this.destroy();
    } finally {
      clearTimeout(deadline);
      watchdog.stop();
    }
  }

  private startTls(socket: Socket, watchdog: OutputWatchdog): Socket {
    const secure = startServerTls(socket, this.context.tls!);
    secure.on('error', (error) => this.context.log(`TLS: ${error.message}`));
    this.socket = secure;
    watchdog.follow(secure);
    return secure;
  }
}
