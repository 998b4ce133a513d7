// Answering NBD_CMD_READ under the connection's byte budget: buffers from the shared pool (or
// bytes the backend lends), zero ranges the backend knows sent as holes, and reads larger than a
// piece sent piece by piece in order, so that a read of any size holds at most the budget.
import type { BlockBackend } from '../block/backend.js';
import { knowsZeroRanges, lendsReads, readsIntoBuffer, type LentBytes, type ReadsIntoBuffer } from '../block/read-into.js';
import { sizeClass, type BufferPool } from './buffer-pool.js';
import type { ByteBudget } from './byte-budget.js';
import * as P from './protocol.js';
import type { ReplyWriter } from './reply-writer.js';
import { commandName, type RequestHeader } from './wire.js';
import type { ConnectionEventDetail } from './connection-events.js';

/**
 * Reads larger than this are read and sent in pieces of this size, so that one read holds at most
 * the connection's budget. 2 MiB is what qemu-img convert and QEMU's block jobs ask for at a time:
 * such a read goes out as one data chunk, as qemu-nbd sends it. Smaller pieces (512 KiB before)
 * cost the client one chunk round of its reply coroutine each, which a client with one or two
 * requests in flight waits for (convert ran at 0.89x of qemu-nbd with them).
 */
const READ_PIECE_BYTES = 2 * 1024 * 1024;

/** One chunk of a structured read reply: bytes [at, at + length) of the request, data or hole. */
interface Piece {
  readonly hole: boolean;
  readonly at: number;
  readonly length: number;
}

/** Bytes read for a reply; `done` gives their buffer (or lent bytes) and budget share back. */
interface HeldBytes {
  readonly data: Buffer;
  readonly done: () => void;
}

/** A read stopped because its client disconnected. */
class ClientGone extends Error {
  constructor() {
    super('client disconnected');
  }
}

export class ReadReplies {
  constructor(
    private readonly backend: BlockBackend,
    private readonly replies: ReplyWriter,
    private readonly pool: BufferPool,
    /** This connection's bytes of read replies and write payloads held at once. */
    private readonly budget: ByteBudget,
    private readonly report: (event: ConnectionEventDetail) => void,
    private readonly exportName: string,
  ) {}

  /** Reads and answers one validated request; a failure before any reply was sent is thrown. */
  async serve(request: RequestHeader): Promise<void> {
    const { backend } = this;
    if (!readsIntoBuffer(backend) || request.length === 0) {
      await this.serveUnpooled(request);
      return;
    }
    const pieces = this.replies.structuredReplies ? this.sparsePieces(request, backend) : undefined;
    if (pieces) {
      await this.readInPieces(request, backend, pieces);
      return;
    }
    if (!this.replies.structuredReplies && request.length > this.budget.limitBytes) {
      await this.streamSimpleRead(request, backend);
      return;
    }
    const { data, done } = await this.readBudgetedPiece(backend, request.offset, request.length);
    this.replies.read(request, data, done);
  }

  /** A backend that only has read(): its own buffer, counted against the budget. */
  private async serveUnpooled(request: RequestHeader): Promise<void> {
    await this.budget.reserve(request.length);
    if (this.replies.closed) {
      this.budget.release(request.length);
      throw new ClientGone();
    }
    let data: Buffer;
    try {
      data = await this.backend.read(request.offset, request.length);
    } catch (error) {
      this.budget.release(request.length);
      throw error;
    }
    this.replies.read(request, data, () => this.budget.release(request.length));
  }

  /**
   * How to answer a structured read in several chunks, or undefined for one data chunk: zero
   * ranges the backend knows become holes (unless the client forbade fragmenting the reply), and
   * large data ranges are cut into pieces so the client receives the first bytes while the rest
   * are read.
   */
  private sparsePieces(request: RequestHeader, backend: BlockBackend): Piece[] | undefined {
    const zeros = knowsZeroRanges(backend) && !(request.flags & P.CMD_FLAG_DF)
      ? backend.knownZeroRanges(request.offset, request.length) : [];
    if (zeros.length === 0 && request.length <= READ_PIECE_BYTES) return undefined;
    const pieces: Piece[] = [];
    const addData = (from: number, to: number): void => {
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
   * takes its own buffer and share of the budget, in order; holes take none.
   */
  private async readInPieces(request: RequestHeader, backend: BlockBackend & ReadsIntoBuffer, pieces: Piece[]): Promise<void> {
    const reads = pieces.map((piece) => (piece.hole ? undefined : this.readBudgetedPiece(backend, request.offset + piece.at, piece.length)));
    for (const read of reads) read?.catch(() => {}); // awaited below, in order
    let sent = 0;
    try {
      for (const [i, piece] of pieces.entries()) {
        const flags = i === pieces.length - 1 ? P.REPLY_FLAG_DONE : 0;
        if (piece.hole) {
          this.replies.holeChunk(request, request.offset + piece.at, piece.length, flags);
        } else {
          const { data, done } = await reads[i]!;
          this.replies.dataChunk(request, request.offset + piece.at, data, flags, done);
        }
        sent = i + 1;
      }
    } catch (error) {
      // Chunks already sent give their buffers back once written; pieces read but not sent now.
      await giveBackUnsent(reads.slice(sent));
      throw error;
    }
  }

  /**
   * A simple-reply read larger than the connection's budget, sent in pieces as they are read so
   * that it holds no more than the budget. The header goes out with the first piece; an error
   * after it cannot be told to the client, so the connection is closed (NBD spec, simple replies).
   */
  private async streamSimpleRead(request: RequestHeader, backend: BlockBackend & ReadsIntoBuffer): Promise<void> {
    const reads: Array<Promise<HeldBytes>> = [];
    for (let at = 0; at < request.length; at += READ_PIECE_BYTES) {
      const read = this.readBudgetedPiece(backend, request.offset + at, Math.min(READ_PIECE_BYTES, request.length - at));
      read.catch(() => {}); // awaited below, in order
      reads.push(read);
    }
    let sent = 0;
    try {
      for (const read of reads) {
        const { data, done } = await read;
        if (sent === 0) this.replies.simpleReadStart(request, data, done);
        else this.replies.simpleReadMore(data, done);
        sent++;
      }
    } catch (error) {
      await giveBackUnsent(reads.slice(sent));
      if (sent === 0) throw error; // nothing sent yet: an ordinary error reply
      this.report({ kind: 'request-failed', exportName: this.exportName, command: commandName(request.type), offset: request.offset, length: request.length, message: (error as Error).message, replyBegun: true });
      this.replies.abort();
    }
  }

  /** One piece read under the budget into a pooled buffer, or into bytes the backend lends. */
  private async readBudgetedPiece(backend: BlockBackend & ReadsIntoBuffer, offset: number, length: number): Promise<HeldBytes> {
    await this.budget.reserve(sizeClass(length));
    if (this.replies.closed) {
      // Waiting for the budget outlived the client: nothing to read for.
      this.budget.release(sizeClass(length));
      throw new ClientGone();
    }
    const storage = await this.pool.take(length);
    const giveBuffer = (): void => {
      this.pool.give(storage);
      this.budget.release(storage.length);
    };
    let lent: LentBytes | undefined;
    try {
      if (lendsReads(backend)) lent = await backend.readIntoOrLend(offset, storage.subarray(0, length));
      else await backend.readInto(offset, storage.subarray(0, length));
    } catch (error) {
      giveBuffer();
      throw error;
    }
    if (!lent) return { data: storage.subarray(0, length), done: giveBuffer };
    // Lent bytes are held until written, in place of the buffer: they keep its share.
    this.pool.give(storage);
    const bytes = lent;
    return { data: bytes.data, done: () => { bytes.release(); this.budget.release(storage.length); } };
  }
}

async function giveBackUnsent(reads: Array<Promise<HeldBytes> | undefined>): Promise<void> {
  const settled = await Promise.allSettled(reads);
  for (const result of settled) if (result.status === 'fulfilled') result.value?.done();
}
