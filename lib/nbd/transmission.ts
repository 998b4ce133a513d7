// The transmission phase of one NBD connection: requests are read in order, validated, run
// concurrently against the backend, and each reply is sent as soon as its request completes.
// Reading is paced: too many requests in flight or too many unsent replies stop it.
import type { Socket } from 'node:net';
import { BlockError, type Extent } from '../block/backend.js';
import type { ByteQueue } from './byte-queue.js';
import { BASE_ALLOCATION_CONTEXT_ID, blockSizeLimits, type Negotiated } from './handshake.js';
import { statusDescriptors } from './block-status.js';
import { nbdErrno } from './errno.js';
import * as P from './protocol.js';
import type { BufferPool } from './buffer-pool.js';
import type { ByteBudget } from './byte-budget.js';
import { ReadReplies } from './read-replies.js';
import { ReplyWriter } from './reply-writer.js';
import { validateRequest, type NegotiatedExport } from './request-validator.js';
import type { ConnectionEventDetail } from './connection-events.js';
import { commandName, decodeRequest, REQUEST_HEADER_BYTES, type RequestHeader } from './wire.js';

/** Requests in flight per connection before we stop reading more. */
const MAX_IN_FLIGHT = 64;
/**
 * Unsent bytes of small replies (headers, errors, block status) beyond the budgeted read data
 * before we stop reading requests: a client that sends requests and never reads stops being read.
 */
const MAX_UNBUDGETED_REPLY_BYTES = 256 * 1024;

export class ProtocolViolation extends Error {}

export class Transmission {
  private inFlight = 0;
  private readonly idle: Array<() => void> = [];
  private readonly negotiatedExport: NegotiatedExport;
  private readonly replies: ReplyWriter;
  private readonly reads: ReadReplies;

  constructor(
    private readonly socket: Socket,
    private readonly queue: ByteQueue,
    private readonly session: Negotiated,
    private readonly report: (event: ConnectionEventDetail) => void,
    pool: BufferPool,
    /** This connection's bytes of read replies and write payloads held at once. */
    private readonly budget: ByteBudget,
  ) {
    const { backend } = session;
    this.negotiatedExport = {
      size: backend.size,
      capabilities: backend.capabilities,
      maximumPayload: blockSizeLimits(backend).maximum,
      transmissionFlags: session.transmissionFlags,
      structuredReplies: session.structuredReplies,
      baseAllocation: session.baseAllocation,
    };
    this.replies = new ReplyWriter(socket, session.structuredReplies);
    this.reads = new ReadReplies(backend, this.replies, pool, budget, report, session.exportName);
  }

  /** Requests are running or replies wait to be sent. */
  get busy(): boolean {
    return this.inFlight > 0 || this.socket.writableLength > 0;
  }

  /** Serves requests until NBD_CMD_DISC or the connection ends. */
  async run(): Promise<void> {
    for (;;) {
      if (this.mustWait()) await this.waitForRoom();
      // Requests still buffered when the client went away are not served: nobody reads the replies.
      if (this.replies.closed) {
        await this.drain();
        return;
      }
      const header = this.queue.take(REQUEST_HEADER_BYTES) ?? (await this.queue.read(REQUEST_HEADER_BYTES));
      const request = decodeRequest(header);
      if (!request) throw new ProtocolViolation('bad request magic');
      if (request.type === P.CMD_DISC) {
        await this.drain();
        return;
      }
      const refusal = validateRequest(request, this.negotiatedExport);
      if (refusal) {
        // A refused write's payload is still on the wire: skip it to keep the connection in step.
        if (request.type === P.CMD_WRITE) await this.queue.skip(request.length);
        this.replies.error(request, refusal.errno, refusal.message);
        continue;
      }
      let payload: Buffer | undefined;
      if (request.type === P.CMD_WRITE) {
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

  /** Runs one validated request against the backend and sends its reply. */
  private async serve(request: RequestHeader, payload: Buffer | undefined): Promise<void> {
    const { backend } = this.session;
    const fua = (request.flags & P.CMD_FLAG_FUA) !== 0;
    try {
      switch (request.type) {
        case P.CMD_READ:
          await this.reads.serve(request);
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
        case P.CMD_BLOCK_STATUS: {
          const extents = backend.capabilities.extents && backend.blockStatusNow
            ? backend.blockStatusNow(request.offset, request.length)
            : await this.extents(request);
          const descriptors = statusDescriptors(request, extents, backend.coalesceStatusBelowBytes);
          if (descriptors.length === 0) this.replies.error(request, P.NBD_EIO, 'backend returned no extent for the range');
          else this.replies.blockStatus(request, BASE_ALLOCATION_CONTEXT_ID, descriptors);
          return;
        }
      }
      this.replies.done(request);
    } catch (error) {
      if (this.replies.closed) return; // the client left; its reads were stopped, not failed
      const errno = nbdErrno(error);
      if (!(error instanceof BlockError) || errno === P.NBD_EIO) {
        this.report({ kind: 'request-failed', exportName: this.session.exportName, command: commandName(request.type), offset: request.offset, length: request.length, message: (error as Error).message, replyBegun: false });
      }
      this.replies.error(request, errno, error instanceof BlockError ? error.message : 'I/O error');
    }
  }

  private async extents(request: RequestHeader): Promise<Extent[]> {
    const { backend } = this.session;
    if (!backend.capabilities.extents) return [{ offset: request.offset, length: request.length, hole: false, zero: false }];
    return backend.blockStatus(request.offset, request.length);
  }
}
