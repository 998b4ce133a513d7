// Reads exact byte counts from a socket as promises. The socket is opened with `onread` (see
// `onread` below): it reads straight into the caller's buffer while a payload is awaited with
// readInto, and otherwise into one reused scratch buffer whose bytes are copied out. So a large
// reply costs no interim copy, and reads allocate nothing for the garbage collector to chase.
import type { Socket } from 'node:net';

/**
 * Small on purpose: bytes read into scratch are copied twice (out of it, then into a payload's
 * buffer) and the first copy is garbage; see nextReadBuffer.
 */
const SCRATCH_BYTES = 4096;

interface Waiter {
  readonly bytes: number;
  resolve(data: Buffer): void;
  reject(error: Error): void;
  /** readInto's target, and how much of it is filled. */
  readonly into?: Buffer;
  filled: number;
}

export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: Waiter | undefined;
  private failure: Error | undefined;
  private readonly scratch = Buffer.allocUnsafe(SCRATCH_BYTES);

  /** Pass to net.connect({ ..., onread }); then attach() the socket. */
  readonly onread = {
    buffer: (): Buffer => this.nextReadBuffer(),
    callback: (bytes: number, buffer: Uint8Array): boolean => { this.received(bytes, buffer); return true; },
  };

  /**
   * Takes a stream's bytes from its 'data' events instead of onread (a TLS socket, which has no
   * onread); returns what stops it.
   */
  follow(stream: Socket): () => void {
    const feed = (chunk: Buffer): void => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.serve();
    };
    stream.on('data', feed);
    return () => stream.off('data', feed);
  }

  attach(socket: Socket): void {
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
    return new Promise((resolve, reject) => { this.waiter = { bytes, resolve, reject, filled: 0 }; });
  }

  /** Fills all of `target` (a payload straight into the caller's buffer: no interim copy). */
  readInto(target: Buffer): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('SocketReader: concurrent reads'));
    if (this.buffered >= target.length) return Promise.resolve(this.take(target.length, target));
    if (this.failure) return Promise.reject(this.failure);
    // What is already buffered goes in now; the socket then reads the rest straight into target.
    const filled = this.buffered;
    if (filled > 0) this.take(filled, target);
    return new Promise((resolve, reject) => { this.waiter = { bytes: target.length, resolve, reject, into: target, filled }; });
  }

  private nextReadBuffer(): Buffer {
    const waiter = this.waiter;
    if (waiter?.into && this.buffered === 0) return waiter.into.subarray(waiter.filled);
    // Node asks for the next read's buffer right after a read, often before the reply loop has
    // said what it waits for next (usually a payload, for its own buffer): a scratch read takes a
    // reply header (exactly what it lacks, when one is awaited) and at most a little more, and
    // the payload then arrives straight in its buffer.
    if (waiter && !waiter.into && waiter.bytes > this.buffered) return this.scratch.subarray(0, Math.min(SCRATCH_BYTES, waiter.bytes - this.buffered));
    return this.scratch;
  }

  private received(bytes: number, buffer: Uint8Array): void {
    if (buffer.buffer === this.scratch.buffer) {
      // The scratch buffer is reused by the next read: keep a copy of these bytes.
      this.chunks.push(Buffer.from(this.scratch.subarray(0, bytes)));
      this.buffered += bytes;
      this.serve();
      return;
    }
    const waiter = this.waiter;
    if (!waiter?.into || buffer.buffer !== waiter.into.buffer || buffer.byteOffset !== waiter.into.byteOffset + waiter.filled) {
      this.fail(new Error('SocketReader: data arrived in a buffer nobody waits for'));
      return;
    }
    waiter.filled += bytes;
    if (waiter.filled >= waiter.bytes) {
      this.waiter = undefined;
      waiter.resolve(waiter.into);
    }
  }

  private serve(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    if (!waiter.into) {
      if (this.buffered >= waiter.bytes) {
        this.waiter = undefined;
        waiter.resolve(this.take(waiter.bytes));
      }
      return;
    }
    const part = Math.min(this.buffered, waiter.bytes - waiter.filled);
    if (part > 0) {
      this.take(part, waiter.into.subarray(waiter.filled, waiter.filled + part));
      waiter.filled += part;
    }
    if (waiter.filled >= waiter.bytes) {
      this.waiter = undefined;
      waiter.resolve(waiter.into);
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
    if (bytes === 0) return into ?? Buffer.alloc(0);
    if (into) return this.copyInto(into, bytes);
    const first = this.chunks[0]!;
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
