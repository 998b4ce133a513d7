// The server side of the fixed newstyle handshake: option haggling until NBD_OPT_GO or
// NBD_OPT_EXPORT_NAME picks an export. A malformed handshake ends with HandshakeFailed. With TLS
// required, NBD_OPT_STARTTLS comes first and the haggling goes on over TLS.
import type { Socket } from 'node:net';
import type { BlockBackend } from '../block/backend.js';
import { ByteQueue } from './byte-queue.js';
import type { ExportProvider } from './export-provider.js';
import * as P from './protocol.js';
import { decodeExportRequest, decodeMetaContextRequest, decodeOptionHeader, encodeExportListing, encodeExportNameReply, encodeGreeting, encodeInfo, encodeMetaContext, encodeOptionReply, OPTION_HEADER_BYTES, optionName, type BlockSizeLimits } from './wire.js';

/** Longest option payload accepted (names and meta context queries are short). */
export const MAX_OPTION_BYTES = 64 * 1024;
/**
 * Unsent option replies after which no further option is read until they drain: a client that
 * sends options and never reads the replies holds at most this, plus the read-ahead.
 */
const MAX_UNSENT_REPLY_BYTES = 64 * 1024;
/** Read-ahead during the handshake: one option of the longest kind and its header. */
export const HANDSHAKE_READ_AHEAD_BYTES = MAX_OPTION_BYTES + OPTION_HEADER_BYTES;
/** Characters of a client's export name echoed in an error reply or a log line. */
const MAX_ECHOED_NAME_CHARS = 256;
export const BASE_ALLOCATION_CONTEXT_ID = 1;

export class HandshakeFailed extends Error {}

/** A client's export name, quoted and cut short: a name is up to 64 KiB of the client's choosing. */
export function quoteName(name: string): string {
  return JSON.stringify(name.length > MAX_ECHOED_NAME_CHARS ? `${name.slice(0, MAX_ECHOED_NAME_CHARS)}…` : name);
}

export interface HandshakeOptions {
  /** Options accepted before the connection is closed. */
  readonly maxOptions: number;
  /**
   * TLS is required: only NBD_OPT_STARTTLS and NBD_OPT_ABORT are answered until it runs; then
   * this turns the socket into a TLS socket.
   */
  readonly startTls?: (socket: Socket) => Socket;
}

export interface Negotiated {
  readonly exportName: string;
  readonly backend: BlockBackend;
  readonly structuredReplies: boolean;
  readonly baseAllocation: boolean;
  /** Transmission flags sent to the client. */
  readonly transmissionFlags: number;
}

/** Transmission flags a backend earns from its capabilities. */
export function transmissionFlagsFor(backend: BlockBackend): number {
  const c = backend.capabilities;
  let flags = P.TFLAG_HAS_FLAGS;
  if (!c.write) flags |= P.TFLAG_READ_ONLY;
  if (c.write && c.flush) flags |= P.TFLAG_SEND_FLUSH | P.TFLAG_SEND_FUA;
  if (c.write && c.trim) flags |= P.TFLAG_SEND_TRIM;
  if (c.write && c.writeZeroes) flags |= P.TFLAG_SEND_WRITE_ZEROES;
  if (c.multiConn) flags |= P.TFLAG_CAN_MULTI_CONN;
  return flags;
}

export function blockSizeLimits(backend: BlockBackend): BlockSizeLimits {
  const maximum = Math.min(backend.constraints.maximum, P.MAX_REQUEST_BYTES);
  const minimum = backend.constraints.minimum;
  return { minimum, preferred: Math.min(Math.max(backend.constraints.preferred, minimum), maximum), maximum };
}

export class Handshake {
  private structuredReplies = false;
  private baseAllocation = false;
  private noZeroes = false;
  private tlsActive = false;

  constructor(
    /** The connection; after STARTTLS, the TLS socket and its queue. */
    public socket: Socket,
    public queue: ByteQueue,
    private readonly exports: ExportProvider,
    private readonly options: HandshakeOptions,
  ) {}

  /** Runs the handshake; undefined when the client aborted politely. */
  async run(): Promise<Negotiated | undefined> {
    this.socket.write(encodeGreeting(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES));

    const clientFlags = (await this.queue.read(4)).readUInt32BE(0);
    if (!(clientFlags & P.CLIENT_FLAG_FIXED_NEWSTYLE)) throw new HandshakeFailed('client does not speak fixed newstyle');
    if (clientFlags & ~(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES)) throw new HandshakeFailed(`unknown client flags 0x${clientFlags.toString(16)}`);
    this.noZeroes = (clientFlags & P.CLIENT_FLAG_NO_ZEROES) !== 0;

    for (let count = 1; ; count++) {
      const header = decodeOptionHeader(await this.queue.read(OPTION_HEADER_BYTES));
      if (!header) throw new HandshakeFailed('bad option magic');
      const { option, length } = header;
      if (length > MAX_OPTION_BYTES) throw new HandshakeFailed(`${optionName(option)} too long (${length} bytes)`);
      if (count > this.options.maxOptions) throw new HandshakeFailed(`more than ${this.options.maxOptions} options in one handshake`);
      const data = await this.queue.read(length);
      const done = this.options.startTls && !this.tlsActive ? await this.beforeTls(option, data) : await this.handleOption(option, data);
      if (done !== 'continue') return done;
      await this.repliesSent();
    }
  }

  /** Waits while too many replies are unsent, so that a client that never reads stops being read. */
  private async repliesSent(atMost = MAX_UNSENT_REPLY_BYTES): Promise<void> {
    const { socket } = this;
    while (socket.writableLength > atMost && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        socket.once('drain', done);
        socket.once('close', done);
      });
    }
  }

  /** With TLS required and not yet started: STARTTLS or ABORT, nothing else. */
  private async beforeTls(option: number, data: Buffer): Promise<Negotiated | undefined | 'continue'> {
    switch (option) {
      case P.OPT_STARTTLS:
        if (data.length !== 0) {
          this.replyError(option, P.REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
          return 'continue';
        }
        // Earlier replies must all be out before TLS takes the socket over: wait for them first;
        // then the ACK and the takeover happen in one turn, before any TLS byte can arrive.
        await this.repliesSent(0);
        if (this.socket.destroyed) throw new HandshakeFailed('connection closed during NBD_OPT_STARTTLS');
        this.reply(option, P.REP_ACK);
        this.startTls();
        return 'continue';
      case P.OPT_ABORT:
        this.reply(option, P.REP_ACK);
        return undefined;
      case P.OPT_EXPORT_NAME:
        // This option has no error reply: the spec says to close.
        throw new HandshakeFailed('NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS: this server requires TLS');
      default:
        this.replyError(option, P.REP_ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first (nbds:// URI, tls-creds)');
        return 'continue';
    }
  }

  private startTls(): void {
    // The client must wait for our ACK before it starts TLS: bytes already here are a violation.
    if (this.queue.bufferedBytes > 0) throw new HandshakeFailed('client sent data after NBD_OPT_STARTTLS before the TLS handshake');
    this.queue.detach();
    this.socket = this.options.startTls!(this.socket);
    this.queue = new ByteQueue(this.socket, HANDSHAKE_READ_AHEAD_BYTES);
    this.tlsActive = true;
    // What was negotiated in the clear does not carry over (NBD spec, STARTTLS).
    this.structuredReplies = false;
    this.baseAllocation = false;
  }

  private async handleOption(option: number, data: Buffer): Promise<Negotiated | undefined | 'continue'> {
    switch (option) {
      case P.OPT_STARTTLS:
        if (this.tlsActive) this.replyError(option, P.REP_ERR_INVALID, 'TLS is already active');
        else this.replyError(option, P.REP_ERR_UNSUP, 'this server does not offer TLS (start it with --tls-creds)');
        return 'continue';
      case P.OPT_EXPORT_NAME:
        return this.exportName(data.toString('utf8'));
      case P.OPT_ABORT:
        this.reply(option, P.REP_ACK);
        return undefined;
      case P.OPT_LIST:
        await this.list(data);
        return 'continue';
      case P.OPT_STRUCTURED_REPLY:
        if (data.length !== 0) this.replyError(option, P.REP_ERR_INVALID, 'structured reply option takes no data');
        else {
          this.structuredReplies = true;
          this.reply(option, P.REP_ACK);
        }
        return 'continue';
      case P.OPT_LIST_META_CONTEXT:
      case P.OPT_SET_META_CONTEXT:
        this.metaContext(option, data);
        return 'continue';
      case P.OPT_INFO:
      case P.OPT_GO:
        return this.infoOrGo(option, data);
      default:
        this.replyError(option, P.REP_ERR_UNSUP, `option ${option} is not supported`);
        return 'continue';
    }
  }

  private async exportName(name: string): Promise<Negotiated> {
    const backend = await this.exports.open(name);
    if (!backend) throw new HandshakeFailed(`unknown export ${quoteName(name)} (NBD_OPT_EXPORT_NAME)`);
    const flags = transmissionFlagsFor(backend);
    this.socket.write(encodeExportNameReply(backend.size, flags, this.noZeroes));
    return this.negotiated(name, backend, flags);
  }

  private negotiated(exportName: string, backend: BlockBackend, transmissionFlags: number): Negotiated {
    return {
      exportName,
      backend,
      structuredReplies: this.structuredReplies,
      baseAllocation: this.structuredReplies && this.baseAllocation,
      transmissionFlags,
    };
  }

  private async list(data: Buffer): Promise<void> {
    if (data.length !== 0) {
      this.replyError(P.OPT_LIST, P.REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
      return;
    }
    for (const { name, description } of await this.exports.list()) {
      this.reply(P.OPT_LIST, P.REP_SERVER, encodeExportListing(name, description));
    }
    this.reply(P.OPT_LIST, P.REP_ACK);
  }

  private metaContext(option: number, data: Buffer): void {
    const parsed = decodeMetaContextRequest(data);
    if (!parsed) {
      this.replyError(option, P.REP_ERR_INVALID, 'malformed meta context request');
      return;
    }
    if (option === P.OPT_SET_META_CONTEXT && !this.structuredReplies) {
      this.replyError(option, P.REP_ERR_INVALID, 'negotiate structured replies first');
      return;
    }
    // Only base:allocation exists here. An empty LIST asks for everything.
    const wanted =
      (option === P.OPT_LIST_META_CONTEXT && parsed.queries.length === 0) ||
      parsed.queries.some((query) => query === P.BASE_ALLOCATION || query === 'base:');
    if (option === P.OPT_SET_META_CONTEXT) this.baseAllocation = wanted;
    if (wanted) this.reply(option, P.REP_META_CONTEXT, encodeMetaContext(BASE_ALLOCATION_CONTEXT_ID, P.BASE_ALLOCATION));
    this.reply(option, P.REP_ACK);
  }

  private async infoOrGo(option: number, data: Buffer): Promise<Negotiated | 'continue'> {
    const request = decodeExportRequest(data);
    if (!request) {
      this.replyError(option, P.REP_ERR_INVALID, 'malformed NBD_OPT_INFO/GO request');
      return 'continue';
    }
    let backend: BlockBackend | undefined;
    try {
      backend = await this.exports.open(request.name);
    } catch (error) {
      this.replyError(option, P.REP_ERR_UNKNOWN, `export ${quoteName(request.name)} cannot be opened: ${(error as Error).message.slice(0, 512)}`);
      return 'continue';
    }
    if (!backend) {
      this.replyError(option, P.REP_ERR_UNKNOWN, `export ${quoteName(request.name)} not present`);
      return 'continue';
    }
    const flags = transmissionFlagsFor(backend);
    this.reply(option, P.REP_INFO, encodeInfo({ kind: 'export', size: backend.size, transmissionFlags: flags }));
    if (request.infos.includes(P.INFO_NAME)) this.reply(option, P.REP_INFO, encodeInfo({ kind: 'name', name: request.name }));
    // Always sent: the maximum matters to every client.
    this.reply(option, P.REP_INFO, encodeInfo({ kind: 'block-size', limits: blockSizeLimits(backend) }));
    this.reply(option, P.REP_ACK);
    return option === P.OPT_GO ? this.negotiated(request.name, backend, flags) : 'continue';
  }

  private reply(option: number, type: number, payload?: Buffer): void {
    this.socket.write(encodeOptionReply(option, type, payload));
  }

  private replyError(option: number, type: number, message: string): void {
    this.reply(option, type, Buffer.from(message, 'utf8'));
  }
}
