// The transmission phase of one NBD connection: requests are read in order, run concurrently
// against the backend, and each reply is sent as soon as its request completes.
import type { Socket } from 'node:net';
import { BlockError, type BlockBackend, type Extent } from '../block/backend.js';
import type { ByteQueue } from './byte-queue.js';
import { BASE_ALLOCATION_CONTEXT_ID, blockSizeLimits, type Negotiated } from './handshake.js';
import { nbdErrno } from './errno.js';
import * as P from './protocol.js';
import { knowsZeroRanges, lendsReads, readsIntoBuffer, type LentBytes, type ReadsIntoBuffer } from '../block/read-into.js';
import { sizeClass, type BufferPool } from './buffer-pool.js';
import type { ByteBudget } from './byte-budget.js';

const REQUEST_HEADER_BYTES = 28;
/** Requests in flight per connection before we stop reading more. */
const MAX_IN_FLIGHT = 64;
/**
 * Unsent bytes of small replies (headers, errors, block status) beyond the budgeted read data
 * before we stop reading requests: a client that sends requests and never reads stops being read.
 */
const MAX_UNBUDGETED_REPLY_BYTES = 256 * 1024;
/** Block status descriptors per reply; the spec lets a server describe less than was asked. */
const MAX_EXTENTS_PER_REPLY = 1024;
/** Structured reads larger than this are read and sent in pieces of this size. */
const READ_PIECE_BYTES = 512 * 1024;
/** Replies at least this big are flushed at once instead of batched until the end of the turn. */
const FLUSH_AT_ONCE_BYTES = 64 * 1024;

export class ProtocolViolation extends Error {}

/** One chunk of a structured read reply: bytes [at, at + length) of the request, data or hole. */
interface Piece {
  readonly hole: boolean;
  readonly at: number;
  readonly length: number;
}

interface Request {
  readonly flags: number;
  readonly type: number;
  readonly cookie: Buffer;
  readonly offset: number;
  readonly length: number;
}

export class Transmission {
  private inFlight = 0;
  private corked = false;
  private readonly idle: Array<() => void> = [];
  private readonly maximum: number;

  constructor(
    private readonly socket: Socket,
    private readonly queue: ByteQueue,
    private readonly session: Negotiated,
    private readonly log: (line: string) => void,
    private readonly pool: BufferPool,
    /** This connection's bytes of read replies and write payloads held at once. */
    private readonly budget: ByteBudget,
  ) {
    this.maximum = blockSizeLimits(session.backend).maximum;
  }

  /** Requests are running or replies wait to be sent. */
  get busy(): boolean {
    return this.inFlight > 0 || this.socket.writableLength > 0;
  }

  /** Serves requests until NBD_CMD_DISC or the connection ends. */
  async run(): Promise<void> {
    for (;;) {
      if (this.mustWait()) await this.waitForRoom();
      const header = this.queue.take(REQUEST_HEADER_BYTES) ?? (await this.queue.read(REQUEST_HEADER_BYTES));
      if (header.readUInt32BE(0) !== P.REQUEST_MAGIC) throw new ProtocolViolation('bad request magic');
      const request: Request = {
        flags: header.readUInt16BE(4),
        type: header.readUInt16BE(6),
        cookie: Buffer.from(header.subarray(8, 16)),
        offset: header.readUInt32BE(16) * 2 ** 32 + header.readUInt32BE(20),
        length: header.readUInt32BE(24),
      };
      if (request.type === P.CMD_DISC) {
        await this.drain();
        return;
      }
      let payload: Buffer | undefined;
      if (request.type === P.CMD_WRITE) {
        if (request.length > this.maximum) {
          // Keep the connection in step: swallow the payload, then refuse.
          await this.queue.skip(request.length);
          this.replyError(request, P.NBD_EINVAL, `write of ${request.length} bytes exceeds the maximum ${this.maximum}`);
          continue;
        }
        // A write's payload is held until the backend has it: it counts against the budget.
        await this.budget.reserve(request.length);
        try {
          payload = this.queue.take(request.length) ?? (await this.queue.read(request.length));
        } catch (error) {
          this.budget.release(request.length);
          throw error;
        }
      }
      this.inFlight++;
      void this.serve(request, payload).finally(() => {
        if (payload) this.budget.release(request.length);
        this.inFlight--;
        for (const wake of this.idle.splice(0)) wake();
      });
    }
  }

  private mustWait(): boolean {
    return this.inFlight >= MAX_IN_FLIGHT || this.socket.writableLength > this.budget.heldBytes + MAX_UNBUDGETED_REPLY_BYTES;
  }

  private async waitForRoom(): Promise<void> {
    while (this.mustWait()) {
      if (this.socket.destroyed) return;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.socket.off('drain', done);
          this.socket.off('close', done);
          resolve();
        };
        if (this.inFlight >= MAX_IN_FLIGHT) this.idle.push(done);
        this.socket.once('drain', done);
        this.socket.once('close', done);
      });
    }
  }

  /** Waits until every request in flight has been answered. */
  async drain(): Promise<void> {
    while (this.inFlight > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
  }

  private async serve(request: Request, payload: Buffer | undefined): Promise<void> {
    const problem = this.check(request, payload);
    if (problem) {
      this.replyError(request, problem.errno, problem.message);
      return;
    }
    const { backend } = this.session;
    const fua = (request.flags & P.CMD_FLAG_FUA) !== 0;
    try {
      switch (request.type) {
        case P.CMD_READ:
          if (readsIntoBuffer(backend) && request.length > 0) {
            const pieces = this.session.structuredReplies ? this.sparsePieces(request) : undefined;
            if (pieces) {
              await this.readInPieces(request, backend, pieces);
              return;
            }
            if (!this.session.structuredReplies && request.length > this.budget.limitBytes) {
              await this.streamSimpleRead(request, backend);
              return;
            }
            const storage = await this.takeBuffer(request.length);
            const data = storage.subarray(0, request.length);
            let lent: LentBytes | undefined;
            try {
              lent = await this.readPiece(backend, request.offset, data);
            } catch (error) {
              this.giveBuffer(storage);
              throw error;
            }
            if (lent) {
              // Lent bytes are held until written, in place of the buffer: they keep its share.
              this.pool.give(storage);
              this.replyRead(request, lent.data, () => { lent.release(); this.budget.release(storage.length); });
            } else {
              this.replyRead(request, data, () => this.giveBuffer(storage));
            }
          } else {
            await this.budget.reserve(request.length);
            let data: Buffer;
            try {
              data = await backend.read(request.offset, request.length);
            } catch (error) {
              this.budget.release(request.length);
              throw error;
            }
            this.replyRead(request, data, () => this.budget.release(request.length));
          }
          return;
        case P.CMD_WRITE:
          await backend.write(request.offset, payload!, { fua });
          break;
        case P.CMD_FLUSH:
          await backend.flush();
          break;
        case P.CMD_TRIM:
          await backend.trim(request.offset, request.length, { fua });
          break;
        case P.CMD_WRITE_ZEROES:
          await backend.writeZeroes(request.offset, request.length, { fua });
          break;
        case P.CMD_BLOCK_STATUS:
          this.replyBlockStatus(request, await this.extents(request));
          return;
      }
      this.replyDone(request);
    } catch (error) {
      const errno = nbdErrno(error);
      if (!(error instanceof BlockError) || errno === P.NBD_EIO) {
        this.log(`${this.session.exportName}: request type ${request.type} at ${request.offset}+${request.length} failed: ${(error as Error).message}`);
      }
      this.replyError(request, errno, error instanceof BlockError ? error.message : 'I/O error');
    }
  }

  /** A reason to refuse the request before it reaches the backend. */
  private check(request: Request, payload: Buffer | undefined): { errno: number; message: string } | undefined {
    const { backend } = this.session;
    const writes = request.type === P.CMD_WRITE || request.type === P.CMD_TRIM || request.type === P.CMD_WRITE_ZEROES;
    switch (request.type) {
      case P.CMD_READ:
      case P.CMD_WRITE:
      case P.CMD_TRIM:
      case P.CMD_WRITE_ZEROES:
      case P.CMD_BLOCK_STATUS:
      case P.CMD_FLUSH:
        break;
      default:
        return { errno: P.NBD_EINVAL, message: `unsupported command ${request.type}` };
    }
    if (writes) {
      const allowed =
        backend.capabilities.write &&
        (request.type !== P.CMD_TRIM || backend.capabilities.trim) &&
        (request.type !== P.CMD_WRITE_ZEROES || backend.capabilities.writeZeroes);
      if (!backend.capabilities.write) return { errno: P.NBD_EPERM, message: 'export is read-only' };
      if (!allowed) return { errno: P.NBD_EINVAL, message: `command ${request.type} not supported by this export` };
    }
    if (request.type === P.CMD_FLUSH) return undefined;
    if (request.type === P.CMD_READ && request.length > this.maximum) {
      return { errno: P.NBD_EINVAL, message: `read of ${request.length} bytes exceeds the maximum ${this.maximum}` };
    }
    if (request.type === P.CMD_BLOCK_STATUS && !this.session.baseAllocation) {
      return { errno: P.NBD_EINVAL, message: 'no meta context negotiated' };
    }
    if (request.offset + request.length > backend.size || (request.type === P.CMD_BLOCK_STATUS && request.length === 0)) {
      return { errno: writes ? P.NBD_ENOSPC : P.NBD_EINVAL, message: `range ${request.offset}+${request.length} is beyond the end of the export (${backend.size})` };
    }
    if (payload && payload.length !== request.length) return { errno: P.NBD_EINVAL, message: 'short payload' };
    return undefined;
  }

  private async extents(request: Request): Promise<Extent[]> {
    const { backend } = this.session;
    if (!backend.capabilities.extents) return [{ offset: request.offset, length: request.length, hole: false, zero: false }];
    return backend.blockStatus(request.offset, request.length);
  }

  /** Writes one reply; `onWritten` runs once the bytes are handed to the kernel (or dropped). */
  private send(buffers: Buffer[], onWritten?: () => void): void {
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
    buffers.forEach((buffer, i) => {
      bytes += buffer.length;
      this.socket.write(buffer, i === buffers.length - 1 && onWritten ? () => onWritten() : undefined);
    });
    // A big reply gains nothing from waiting for company: send the batch now.
    if (bytes >= FLUSH_AT_ONCE_BYTES && this.corked) {
      this.corked = false;
      this.socket.uncork();
    }
  }

  private simpleHeader(request: Request, errno: number): Buffer {
    const header = Buffer.allocUnsafe(16);
    header.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
    header.writeUInt32BE(errno, 4);
    request.cookie.copy(header, 8);
    return header;
  }

  private chunkHeader(request: Request, flags: number, type: number, length: number): Buffer {
    const header = Buffer.allocUnsafe(20);
    header.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    request.cookie.copy(header, 8);
    header.writeUInt32BE(length, 16);
    return header;
  }

  private replyDone(request: Request): void {
    if (this.session.structuredReplies && request.type === P.CMD_READ) {
      this.send([this.chunkHeader(request, P.REPLY_FLAG_DONE, P.REPLY_TYPE_NONE, 0)]);
    } else {
      this.send([this.simpleHeader(request, 0)]);
    }
  }

  /**
   * How to answer a structured read in several chunks, or undefined for one data chunk: zero
   * ranges the backend knows become holes (unless the client forbade fragmenting the reply), and
   * large data ranges are cut into pieces so the client receives the first bytes while the rest
   * are read.
   */
  private sparsePieces(request: Request): Piece[] | undefined {
    const { backend } = this.session;
    const zeros = knowsZeroRanges(backend) && !(request.flags & P.CMD_FLAG_DF)
      ? backend.knownZeroRanges(request.offset, request.length) : [];
    if (zeros.length === 0 && request.length <= READ_PIECE_BYTES) return undefined;
    const pieces: Piece[] = [];
    const addData = (from: number, to: number) => {
      for (let at = from; at < to; at += READ_PIECE_BYTES) pieces.push({ hole: false, at, length: Math.min(READ_PIECE_BYTES, to - at) });
    };
    let at = 0;
    for (const [from, to] of zeros) {
      addData(at, from - request.offset);
      pieces.push({ hole: true, at: from - request.offset, length: to - from });
      at = to - request.offset;
    }
    addData(at, request.length);
    return pieces;
  }

  /**
   * Reads the data pieces and sends every piece in order as soon as it is ready. Each data piece
   * takes its own buffer and share of the budget, in order, so a read of any size holds at most
   * the connection's budget; holes take none.
   */
  private async readInPieces(request: Request, backend: BlockBackend & ReadsIntoBuffer, pieces: Piece[]): Promise<void> {
    const reads = pieces.map((piece) => (piece.hole ? undefined : this.readBudgetedPiece(backend, request.offset + piece.at, piece.length)));
    for (const read of reads) read?.catch(() => {}); // awaited below, in order
    let sent = 0;
    try {
      for (const [i, piece] of pieces.entries()) {
        const flags = i === pieces.length - 1 ? P.REPLY_FLAG_DONE : 0;
        if (piece.hole) {
          this.sendHoleChunk(request, request.offset + piece.at, piece.length, flags);
        } else {
          const { data, done } = await reads[i]!;
          this.sendDataChunk(request, request.offset + piece.at, data, flags, done);
        }
        sent = i + 1;
      }
    } catch (error) {
      // Chunks already sent give their buffers back once written; pieces read but not sent now.
      await this.giveBackUnsent(reads.slice(sent));
      throw error;
    }
  }

  /**
   * A simple-reply read larger than the connection's budget, sent in pieces as they are read so
   * that it holds no more than the budget. The header goes out with the first piece; an error
   * after it cannot be told to the client, so the connection is closed (NBD spec, simple replies).
   */
  private async streamSimpleRead(request: Request, backend: BlockBackend & ReadsIntoBuffer): Promise<void> {
    const reads: Array<Promise<{ data: Buffer; done: () => void }>> = [];
    for (let at = 0; at < request.length; at += READ_PIECE_BYTES) {
      const read = this.readBudgetedPiece(backend, request.offset + at, Math.min(READ_PIECE_BYTES, request.length - at));
      read.catch(() => {}); // awaited below, in order
      reads.push(read);
    }
    let sent = 0;
    try {
      for (const read of reads) {
        const { data, done } = await read;
        this.send(sent === 0 ? [this.simpleHeader(request, 0), data] : [data], done);
        sent++;
      }
    } catch (error) {
      await this.giveBackUnsent(reads.slice(sent));
      if (sent === 0) throw error; // nothing sent yet: an ordinary error reply
      this.log(`${this.session.exportName}: read at ${request.offset}+${request.length} failed after its reply began: ${(error as Error).message}; closing the connection`);
      this.socket.destroy();
    }
  }

  private async giveBackUnsent(reads: Array<Promise<{ data: Buffer; done: () => void }> | undefined>): Promise<void> {
    const settled = await Promise.allSettled(reads);
    for (const result of settled) if (result.status === 'fulfilled') result.value?.done();
  }

  /** One piece read under the budget; `done` gives its buffer (or lent bytes) and share back. */
  private async readBudgetedPiece(backend: BlockBackend & ReadsIntoBuffer, offset: number, length: number): Promise<{ data: Buffer; done: () => void }> {
    const storage = await this.takeBuffer(length);
    let lent: LentBytes | undefined;
    try {
      lent = await this.readPiece(backend, offset, storage.subarray(0, length));
    } catch (error) {
      this.giveBuffer(storage);
      throw error;
    }
    if (!lent) return { data: storage.subarray(0, length), done: () => this.giveBuffer(storage) };
    // Lent bytes are held until written, in place of the buffer: they keep its share.
    this.pool.give(storage);
    const bytes = lent;
    return { data: bytes.data, done: () => { bytes.release(); this.budget.release(storage.length); } };
  }

  /** A reply buffer from the shared pool, once this connection's budget has room for it. */
  private async takeBuffer(length: number): Promise<Buffer> {
    await this.budget.reserve(sizeClass(length));
    return this.pool.take(length);
  }

  private giveBuffer(storage: Buffer): void {
    this.pool.give(storage);
    this.budget.release(storage.length);
  }

  /** Fills `target`, or takes the bytes the backend lends instead (no copy). */
  private async readPiece(backend: BlockBackend & ReadsIntoBuffer, offset: number, target: Buffer): Promise<LentBytes | undefined> {
    if (lendsReads(backend)) return backend.readIntoOrLend(offset, target);
    await backend.readInto(offset, target);
    return undefined;
  }

  private sendHoleChunk(request: Request, offset: number, length: number, flags: number, onWritten?: () => void): void {
    const chunk = Buffer.allocUnsafe(32);
    writeOffsetChunkHeader(chunk, request, flags, P.REPLY_TYPE_OFFSET_HOLE, 12, offset);
    chunk.writeUInt32BE(length, 28);
    this.send([chunk], onWritten);
  }

  private sendDataChunk(request: Request, offset: number, data: Buffer, flags: number, onWritten?: () => void): void {
    const header = Buffer.allocUnsafe(28);
    writeOffsetChunkHeader(header, request, flags, P.REPLY_TYPE_OFFSET_DATA, 8 + data.length, offset);
    this.send([header, data], onWritten);
  }

  private replyRead(request: Request, data: Buffer, onWritten?: () => void): void {
    if (!this.session.structuredReplies) {
      this.send([this.simpleHeader(request, 0), data], onWritten);
      return;
    }
    if (data.length === 0) {
      this.replyDone(request);
      onWritten?.();
      return;
    }
    this.sendDataChunk(request, request.offset, data, P.REPLY_FLAG_DONE, onWritten);
  }

  private replyBlockStatus(request: Request, extents: Extent[]): void {
    const end = request.offset + request.length;
    const descriptors: Array<[number, number]> = [];
    let at = request.offset;
    for (const extent of extents) {
      const from = Math.max(at, extent.offset);
      const to = Math.min(end, extent.offset + extent.length);
      if (from !== at || to <= from) break; // must be contiguous from the request's offset
      descriptors.push([to - from, (extent.hole ? P.STATE_HOLE : 0) | (extent.zero ? P.STATE_ZERO : 0)]);
      at = to;
      if (at >= end || request.flags & P.CMD_FLAG_REQ_ONE || descriptors.length >= MAX_EXTENTS_PER_REPLY) break;
    }
    if (descriptors.length === 0) {
      this.replyError(request, P.NBD_EIO, 'backend returned no extent for the range');
      return;
    }
    const payload = Buffer.allocUnsafe(4 + descriptors.length * 8);
    payload.writeUInt32BE(BASE_ALLOCATION_CONTEXT_ID, 0);
    descriptors.forEach(([length, flags], i) => {
      payload.writeUInt32BE(length, 4 + i * 8);
      payload.writeUInt32BE(flags, 8 + i * 8);
    });
    this.send([this.chunkHeader(request, P.REPLY_FLAG_DONE, P.REPLY_TYPE_BLOCK_STATUS, payload.length), payload]);
  }

  private replyError(request: Request, errno: number, message: string): void {
    if (!this.session.structuredReplies) {
      this.send([this.simpleHeader(request, errno)]);
      return;
    }
    const text = Buffer.from(message.slice(0, 200), 'utf8');
    const payload = Buffer.allocUnsafe(6 + text.length);
    payload.writeUInt32BE(errno, 0);
    payload.writeUInt16BE(text.length, 4);
    text.copy(payload, 6);
    this.send([this.chunkHeader(request, P.REPLY_FLAG_DONE, P.REPLY_TYPE_ERROR, payload.length), payload]);
  }
}

/** The 28 bytes that start an OFFSET_DATA or OFFSET_HOLE chunk: chunk header, then the offset. */
function writeOffsetChunkHeader(out: Buffer, request: Request, flags: number, type: number, length: number, offset: number): void {
  out.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  request.cookie.copy(out, 8);
  out.writeUInt32BE(length, 16);
  out.writeUInt32BE(Math.floor(offset / 2 ** 32), 20);
  out.writeUInt32BE(offset >>> 0, 24);
}
