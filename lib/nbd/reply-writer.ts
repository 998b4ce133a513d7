// Sending the replies of one NBD connection: the reply shape the client negotiated (simple or
// structured), encoded by wire.ts, and the batching of small replies into one write per turn.
import type { Socket } from 'node:net';
import * as P from './protocol.js';
import { encodeBlockStatusChunk, encodeChunkHeader, encodeDataChunkHeader, encodeErrorChunk, encodeHoleChunk, encodeSimpleReply, type RequestHeader, type StatusDescriptor } from './wire.js';

/** Replies at least this big are flushed at once instead of batched until the end of the turn. */
const FLUSH_AT_ONCE_BYTES = 64 * 1024;

export class ReplyWriter {
  private corked = false;

  constructor(private readonly socket: Socket, readonly structuredReplies: boolean) {}

  /** The client is gone (or its side of the socket ended): nothing more can reach it. */
  get closed(): boolean {
    return !this.socket.writable;
  }

  /** Writes one reply; `onWritten` runs once the bytes are handed to the kernel (or dropped). */
  send(buffers: Buffer[], onWritten?: () => void): void {
    if (this.socket.destroyed) {
      onWritten?.();
      return;
    }
    // Replies finished in the same turn of the event loop leave in one writev: one syscall for
    // many small replies when many requests are in flight.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    let bytes = 0;
    for (let i = 0; i < buffers.length; i++) {
      bytes += buffers[i]!.length;
      this.socket.write(buffers[i]!, i === buffers.length - 1 ? onWritten : undefined);
    }
    // A big reply gains nothing from waiting for company: send the batch now.
    if (bytes >= FLUSH_AT_ONCE_BYTES && this.corked) {
      this.corked = false;
      this.socket.uncork();
    }
  }

  /** Success without data (a structured read of length 0 gets a NONE chunk). */
  done(request: RequestHeader): void {
    if (this.structuredReplies && request.type === P.CMD_READ) {
      this.send([encodeChunkHeader(request.cookie, P.REPLY_FLAG_DONE, P.REPLY_TYPE_NONE, 0)]);
    } else {
      this.send([encodeSimpleReply(request.cookie, 0)]);
    }
  }

  error(request: RequestHeader, errno: number, message: string): void {
    if (this.structuredReplies) this.send([encodeErrorChunk(request.cookie, P.REPLY_FLAG_DONE, errno, message)]);
    else this.send([encodeSimpleReply(request.cookie, errno)]);
  }

  /** A whole read answered in one reply. */
  read(request: RequestHeader, data: Buffer, onWritten?: () => void): void {
    if (!this.structuredReplies) {
      this.send([encodeSimpleReply(request.cookie, 0), data], onWritten);
      return;
    }
    if (data.length === 0) {
      this.done(request);
      onWritten?.();
      return;
    }
    this.dataChunk(request, request.offset, data, P.REPLY_FLAG_DONE, onWritten);
  }

  /** The first piece of a simple read reply sent in pieces: the header goes with it. */
  simpleReadStart(request: RequestHeader, data: Buffer, onWritten?: () => void): void {
    this.send([encodeSimpleReply(request.cookie, 0), data], onWritten);
  }

  /** A later piece of a simple read reply: bare data. */
  simpleReadMore(data: Buffer, onWritten?: () => void): void {
    this.send([data], onWritten);
  }

  dataChunk(request: RequestHeader, offset: number, data: Buffer, flags: number, onWritten?: () => void): void {
    this.send([encodeDataChunkHeader(request.cookie, flags, offset, data.length), data], onWritten);
  }

  holeChunk(request: RequestHeader, offset: number, length: number, flags: number): void {
    this.send([encodeHoleChunk(request.cookie, flags, offset, length)]);
  }

  blockStatus(request: RequestHeader, contextId: number, descriptors: readonly StatusDescriptor[]): void {
    this.send([encodeBlockStatusChunk(request.cookie, P.REPLY_FLAG_DONE, contextId, descriptors)]);
  }

  /** Ends the connection at once: used when a reply already begun cannot be finished. */
  abort(): void {
    this.socket.destroy();
  }
}
