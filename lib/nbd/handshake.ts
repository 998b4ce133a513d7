// The server side of the fixed newstyle handshake: option haggling until NBD_OPT_GO or
// NBD_OPT_EXPORT_NAME picks an export. A malformed handshake ends with HandshakeFailed. With TLS
// required, NBD_OPT_STARTTLS comes first and the haggling goes on over TLS.
import type { Socket } from 'node:net';
import type { BlockBackend } from '../block/backend.js';
import { ByteQueue } from './byte-queue.js';
import type { ExportProvider } from './export-provider.js';
import * as P from './protocol.js';

/** Longest option payload accepted (names and meta context queries are short). */
const MAX_OPTION_BYTES = 64 * 1024;
/**
 * Unsent option replies after which no further option is read until they drain: a client that
 * sends options and never reads the replies holds at most this, plus the read-ahead.
 */
const MAX_UNSENT_REPLY_BYTES = 64 * 1024;
/** Read-ahead during the handshake: one option of the longest kind and its header. */
export const HANDSHAKE_READ_AHEAD_BYTES = MAX_OPTION_BYTES + 16;
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

export function blockSizeLimits(backend: BlockBackend): { minimum: number; preferred: number; maximum: number } {
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
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(P.NBDMAGIC, 0);
    greeting.writeBigUInt64BE(P.IHAVEOPT, 8);
    greeting.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    this.socket.write(greeting);

    const clientFlags = (await this.queue.read(4)).readUInt32BE(0);
    if (!(clientFlags & P.CLIENT_FLAG_FIXED_NEWSTYLE)) throw new HandshakeFailed('client does not speak fixed newstyle');
    if (clientFlags & ~(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES)) throw new HandshakeFailed(`unknown client flags 0x${clientFlags.toString(16)}`);
    this.noZeroes = (clientFlags & P.CLIENT_FLAG_NO_ZEROES) !== 0;

    for (let count = 1; ; count++) {
      const header = await this.queue.read(16);
      if (header.readBigUInt64BE(0) !== P.IHAVEOPT) throw new HandshakeFailed('bad option magic');
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      if (length > MAX_OPTION_BYTES) throw new HandshakeFailed(`option ${option} too long (${length} bytes)`);
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
    const reply = Buffer.alloc(this.noZeroes ? 10 : 134);
    reply.writeBigUInt64BE(BigInt(backend.size), 0);
    reply.writeUInt16BE(flags, 8);
    this.socket.write(reply);
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
      const nameBytes = Buffer.from(name, 'utf8');
      const descriptionBytes = Buffer.from(description ?? '', 'utf8');
      const payload = Buffer.alloc(4 + nameBytes.length + descriptionBytes.length);
      payload.writeUInt32BE(nameBytes.length, 0);
      nameBytes.copy(payload, 4);
      descriptionBytes.copy(payload, 4 + nameBytes.length);
      this.reply(P.OPT_LIST, P.REP_SERVER, payload);
    }
    this.reply(P.OPT_LIST, P.REP_ACK);
  }

  private metaContext(option: number, data: Buffer): void {
    const parsed = parseMetaContextRequest(data);
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
    if (wanted) {
      const name = Buffer.from(P.BASE_ALLOCATION, 'utf8');
      const payload = Buffer.alloc(4 + name.length);
      payload.writeUInt32BE(BASE_ALLOCATION_CONTEXT_ID, 0);
      name.copy(payload, 4);
      this.reply(option, P.REP_META_CONTEXT, payload);
    }
    this.reply(option, P.REP_ACK);
  }

  private async infoOrGo(option: number, data: Buffer): Promise<Negotiated | 'continue'> {
    const request = parseInfoRequest(data);
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
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(P.INFO_EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(backend.size), 2);
    exportInfo.writeUInt16BE(flags, 10);
    this.reply(option, P.REP_INFO, exportInfo);
    if (request.infos.includes(P.INFO_NAME)) {
      const name = Buffer.from(request.name, 'utf8');
      const payload = Buffer.alloc(2 + name.length);
      payload.writeUInt16BE(P.INFO_NAME, 0);
      name.copy(payload, 2);
      this.reply(option, P.REP_INFO, payload);
    }
    // Always sent: the maximum matters to every client.
    const limits = blockSizeLimits(backend);
    const blockSize = Buffer.alloc(14);
    blockSize.writeUInt16BE(P.INFO_BLOCK_SIZE, 0);
    blockSize.writeUInt32BE(limits.minimum, 2);
    blockSize.writeUInt32BE(limits.preferred, 6);
    blockSize.writeUInt32BE(limits.maximum, 10);
    this.reply(option, P.REP_INFO, blockSize);
    this.reply(option, P.REP_ACK);
    return option === P.OPT_GO ? this.negotiated(request.name, backend, flags) : 'continue';
  }

  private reply(option: number, type: number, payload: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.alloc(20);
    header.writeBigUInt64BE(P.OPT_REPLY_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(type >>> 0, 12);
    header.writeUInt32BE(payload.length, 16);
    this.socket.write(payload.length ? Buffer.concat([header, payload]) : header);
  }

  private replyError(option: number, type: number, message: string): void {
    this.reply(option, type, Buffer.from(message, 'utf8'));
  }
}

function parseInfoRequest(data: Buffer): { name: string; infos: number[] } | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (4 + nameLength + 2 > data.length) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + count * 2) return undefined;
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(4 + nameLength + 2 + i * 2));
  return { name, infos };
}

function parseMetaContextRequest(data: Buffer): { exportName: string; queries: string[] } | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (4 + nameLength + 4 > data.length) return undefined;
  const exportName = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt32BE(4 + nameLength);
  const queries: string[] = [];
  let at = 4 + nameLength + 4;
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const length = data.readUInt32BE(at);
    if (at + 4 + length > data.length) return undefined;
    queries.push(data.toString('utf8', at + 4, at + 4 + length));
    at += 4 + length;
  }
  if (at !== data.length) return undefined;
  return { exportName, queries };
}
