// Reads exact byte counts from a socket as promises (zero-copy when one chunk holds them).
import type { Socket } from 'node:net';

export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { bytes: number; resolve: (data: Buffer) => void; reject: (error: Error) => void; into?: Buffer } | undefined;
  private failure: Error | undefined;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.serve();
    });
    const end = (error?: Error) => this.fail(error ?? new Error('NBD server closed the connection'));
    socket.on('end', () => end());
    socket.on('close', () => end());
    socket.on('error', (error) => end(error));
  }

  /** Resolves with exactly `bytes` bytes; one read at a time. */
  readExactly(bytes: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('SocketReader: concurrent reads'));
    if (this.buffered >= bytes) return Promise.resolve(this.take(bytes));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => { this.waiter = { bytes, resolve, reject }; });
  }

  /** Fills all of `target` (a payload straight into the caller's buffer: no interim copy). */
  readInto(target: Buffer): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('SocketReader: concurrent reads'));
    if (this.buffered >= target.length) return Promise.resolve(this.take(target.length, target));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => { this.waiter = { bytes: target.length, resolve, reject, into: target }; });
  }

  private serve(): void {
    const waiter = this.waiter;
    if (waiter && this.buffered >= waiter.bytes) {
      this.waiter = undefined;
      waiter.resolve(this.take(waiter.bytes, waiter.into));
    }
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
  }

  private take(bytes: number, into?: Buffer): Buffer {
    this.buffered -= bytes;
    const first = this.chunks[0]!;
    if (bytes === 0) return into ?? Buffer.alloc(0);
    if (into) return this.copyInto(into, bytes);
    if (first.length > bytes) {
      this.chunks[0] = first.subarray(bytes);
      return first.subarray(0, bytes);
    }
    if (first.length === bytes) {
      this.chunks.shift();
      return first;
    }
    return this.copyInto(Buffer.allocUnsafe(bytes), bytes);
  }

  private copyInto(out: Buffer, bytes: number): Buffer {
    let filled = 0;
    while (filled < bytes) {
      const chunk = this.chunks[0]!;
      const used = Math.min(chunk.length, bytes - filled);
      chunk.copy(out, filled, 0, used);
      filled += used;
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    return out;
  }
}
