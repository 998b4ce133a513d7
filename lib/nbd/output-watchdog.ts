// Closes a connection whose peer has stopped taking its output: bytes are waiting to be sent and
// none has left for `stallTimeoutMs`. Whatever such a connection holds (reply buffers, its share
// of the budget, a connection slot) comes back, and a busy client is never taken for a stuck one:
// only output that does not move counts, not how long requests take.
import type { Socket } from 'node:net';

export class OutputWatchdog {
  private timer: NodeJS.Timeout | undefined;
  private socket: Socket;
  private lastSent = 0;
  private lastProgressAt = Date.now();

  constructor(socket: Socket, private readonly stallTimeoutMs: number, private readonly onStall: (seconds: number) => void) {
    this.socket = socket;
    if (stallTimeoutMs <= 0) return;
    // A few checks per timeout are enough: closing a little late costs nothing.
    this.timer = setInterval(() => this.check(), Math.max(10, Math.min(1000, stallTimeoutMs / 4)));
    this.timer.unref();
  }

  /** Watches another socket from now on (the TLS socket after STARTTLS). */
  follow(socket: Socket): void {
    this.socket = socket;
    this.lastSent = 0;
    this.lastProgressAt = Date.now();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private check(): void {
    const { socket } = this;
    if (socket.destroyed) {
      this.stop();
      return;
    }
    const now = Date.now();
    // bytesWritten counts bytes handed to write(); writableLength those not yet sent.
    const sent = socket.bytesWritten - socket.writableLength;
    if (socket.writableLength === 0 || sent !== this.lastSent) {
      this.lastSent = sent;
      this.lastProgressAt = now;
      return;
    }
    if (now - this.lastProgressAt >= this.stallTimeoutMs) {
      this.stop();
      this.onStall(Math.round((now - this.lastProgressAt) / 100) / 10);
    }
  }
}
