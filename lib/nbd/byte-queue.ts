// Buffered reading of exact byte counts from a socket, with backpressure: the socket is paused
// while more than `highWater` bytes wait unread (unless a reader needs more than that).
import type { Socket } from 'node:net';

/** The peer closed (or the socket failed) before the bytes a reader waited for arrived. */
export class ConnectionClosed extends Error {
  constructor(readonly wanted: number, readonly had: number) {
    super(had === 0 ? 'connection closed' : `connection closed after ${had} of ${wanted} bytes`);
  }
}

export class ByteQueue {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private waiter?: { wanted: number; resolve: () => void };
  private readonly onData = (chunk: Buffer): void => {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.buffered > this.highWater && (!this.waiter || this.buffered >= this.waiter.wanted)) this.socket.pause();
    this.wake();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.wake();
  };

  constructor(private readonly socket: Socket, private highWater = 4 * 1024 * 1024) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onEnd);
  }

  /** Bytes received and not yet read. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Read-ahead allowed from now on (the handshake needs little, transmission more). */
  setHighWater(bytes: number): void {
    this.highWater = bytes;
    if (this.buffered <= bytes && this.socket.isPaused()) this.socket.resume();
  }

  /** Stops taking the socket's bytes (STARTTLS hands the socket to TLS). */
  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onEnd);
  }

  private wake(): void {
    if (this.waiter && (this.buffered >= this.waiter.wanted || this.ended)) {
      const { resolve } = this.waiter;
      this.waiter = undefined;
      resolve();
    }
  }

  /** Exactly `n` bytes if they are already buffered, else undefined (no waiting). */
  take(n: number): Buffer | undefined {
    if (this.buffered < n) return undefined;
    if (n === 0) return Buffer.alloc(0);
    let result: Buffer;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      result = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      result = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[0]!;
        const part = Math.min(chunk.length, n - filled);
        chunk.copy(result, filled, 0, part);
        filled += part;
        if (part === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(part);
      }
    }
    this.buffered -= n;
    if (this.buffered <= this.highWater && this.socket.isPaused()) this.socket.resume();
    return result;
  }

  /** Exactly `n` bytes; rejects with ConnectionClosed if the peer goes away first. */
  async read(n: number): Promise<Buffer> {
    for (;;) {
      const result = this.take(n);
      if (result) return result;
      if (this.ended) throw new ConnectionClosed(n, this.buffered);
      if (this.socket.isPaused()) this.socket.resume();
      await new Promise<void>((resolve) => (this.waiter = { wanted: n, resolve }));
    }
  }

  /** Discards `n` bytes as they arrive, without copying or holding them. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0) {
        if (this.ended) throw new ConnectionClosed(n, n - left);
        if (this.socket.isPaused()) this.socket.resume();
        await new Promise<void>((resolve) => (this.waiter = { wanted: 1, resolve }));
        continue;
      }
      const chunk = this.chunks[0]!;
      const part = Math.min(chunk.length, left);
      if (part === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(part);
      this.buffered -= part;
      left -= part;
      if (this.buffered <= this.highWater && this.socket.isPaused()) this.socket.resume();
    }
  }
}
