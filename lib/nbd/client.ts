// An NBD client (fixed newstyle, OPT_GO, simple replies, pipelined requests) that is a BlockBackend.
// Used by the fetcher to read manifests and blocks from `lazyboot repo serve`, and by tests.
// A little over 300 lines: the connection (TLS included) and the requests of one client, kept together.
import { connect as netConnect, type Socket } from 'node:net';
import { BlockError, type BlockBackend, type BlockCapabilities, type BlockSizeConstraints, type Extent, type WriteOptions } from '../block/backend.js';
import * as P from './protocol.js';
import { blockErrorCode } from './errno.js';
import {
  decodeGreeting, decodeInfo, decodeOptionReplyHeader, decodeSimpleReply, encodeClientFlags, encodeExportRequest, encodeOption, encodeRequest,
  GREETING_BYTES, isOptionError, OPTION_REPLY_HEADER_BYTES, SIMPLE_REPLY_HEADER_BYTES,
} from './wire.js';
import { SocketReader } from './client-reader.js';
import { formatNbdUri, parseNbdUri, type NbdTarget } from './client-uri.js';
import { loadClientTls, startClientTls } from './tls.js';
import { TlsCredentialsInvalid } from './errors.js';
import { NbdConnectError } from './errors.js';

export { parseNbdUri, formatNbdUri, isNbdUri, withTlsCredentials, type NbdTarget } from './client-uri.js';

/** A refusal the user fixes with TLS settings, not by checking the export name. */
class TlsRefused extends Error {
  constructor(message: string, readonly hint: string) {
    super(message);
  }
}

export interface NbdConnectOptions extends NbdTarget {
  /** Give up connecting/negotiating after this long (default 10 s). */
  readonly connectTimeoutMs?: number;
}

interface Pending {
  readonly type: number;
  readonly length: number;
  /** A read's payload goes straight here when the caller gave a buffer. */
  readonly into?: Buffer;
  resolve(data: Buffer): void;
  reject(error: Error): void;
}

export class NbdClient implements BlockBackend {
  readonly capabilities: BlockCapabilities;
  readonly constraints: BlockSizeConstraints;
  private readonly pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  private failure: Error | undefined;
  private closing = false;
  private endedByServer = false;

  private constructor(
    readonly uri: string,
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    readonly size: number,
    readonly transmissionFlags: number,
    constraints: BlockSizeConstraints | undefined,
  ) {
    const has = (flag: number) => (transmissionFlags & flag) !== 0;
    this.capabilities = {
      write: !has(P.TFLAG_READ_ONLY),
      flush: has(P.TFLAG_SEND_FLUSH),
      trim: has(P.TFLAG_SEND_TRIM),
      writeZeroes: has(P.TFLAG_SEND_WRITE_ZEROES),
      extents: false,
      multiConn: has(P.TFLAG_CAN_MULTI_CONN),
    };
    this.constraints = constraints ?? { minimum: 1, preferred: 4096, maximum: P.MAX_REQUEST_BYTES };
    socket.on('end', () => { this.endedByServer = true; });
    socket.on('close', () => this.failAll(new BlockError('EIO', `NBD connection to ${uri} closed`)));
    socket.on('error', (error) => this.failAll(new BlockError('EIO', `NBD connection to ${uri} failed: ${error.message}`, { cause: error })));
    void this.receiveReplies();
  }

  /** Connects to an NBD URI (or target) and selects its export with OPT_GO (after STARTTLS for nbds). */
  static async connect(target: string | NbdConnectOptions): Promise<NbdClient> {
    const options: NbdConnectOptions = typeof target === 'string' ? parseNbdUri(target) : target;
    const uri = formatNbdUri(options);
    let tls;
    try {
      tls = options.tls ? await loadClientTls(options.tls) : undefined;
    } catch (error) {
      if (error instanceof TlsCredentialsInvalid) throw new NbdConnectError(uri, error.message, { cause: error, hint: error.hint ?? 'check the TLS credentials' });
      throw error;
    }
    const reader = new SocketReader();
    // A TLS socket has no onread: its bytes come as 'data' events, before and after STARTTLS.
    const onread = tls ? {} : { onread: reader.onread };
    const raw = options.socketPath
      ? netConnect({ path: options.socketPath, ...onread })
      : netConnect({ host: options.host ?? '127.0.0.1', port: options.port ?? 10809, ...onread });
    reader.attach(raw);
    const stopFollowingRaw = tls ? reader.follow(raw) : undefined;
    raw.setNoDelay(true);
    let socket: Socket = raw;
    const startTls = tls ? async (): Promise<Socket> => {
      stopFollowingRaw!();
      const secure = await startClientTls(raw, tls, options.socketPath ? undefined : options.host ?? '127.0.0.1');
      reader.follow(secure);
      reader.attach(secure);
      socket = secure;
      return secure;
    } : undefined;
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      const negotiated = await Promise.race([
        new Promise<void>((resolve, reject) => {
          raw.once('connect', resolve);
          raw.once('error', reject);
        }).then(() => negotiate(raw, reader, options.exportName, startTls)),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      return new NbdClient(uri, socket, reader, negotiated.size, negotiated.flags, negotiated.constraints);
    } catch (error) {
      socket.destroy();
      raw.destroy();
      // What to do about a TLS refusal goes into the message: a caller listing several
      // repositories (RepositoryUnreachable) keeps messages, not hints.
      const detail = error instanceof TlsRefused ? `${error.message} (${error.hint})` : error instanceof Error ? error.message : String(error);
      throw new NbdConnectError(uri, detail, { cause: error, ...(error instanceof TlsRefused ? { hint: 'check the TLS settings of client and server' } : {}) });
    } finally {
      clearTimeout(timer);
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const maximum = this.constraints.maximum;
    if (length <= maximum) return this.request(P.CMD_READ, 0, offset, length);
    const parts: Promise<Buffer>[] = [];
    for (let at = 0; at < length; at += maximum) parts.push(this.request(P.CMD_READ, 0, offset + at, Math.min(maximum, length - at)));
    return Buffer.concat(await Promise.all(parts));
  }

  /** Like read, into the caller's buffer (the fetcher hands in shared memory for its hasher). */
  async readInto(offset: number, target: Buffer): Promise<void> {
    const maximum = this.constraints.maximum;
    const parts: Promise<Buffer>[] = [];
    for (let at = 0; at < target.length; at += maximum) {
      parts.push(this.request(P.CMD_READ, 0, offset + at, Math.min(maximum, target.length - at), undefined, target.subarray(at, at + maximum)));
    }
    await Promise.all(parts);
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    await this.request(P.CMD_WRITE, options?.fua ? P.CMD_FLAG_FUA : 0, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.request(P.CMD_FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    await this.request(P.CMD_TRIM, options?.fua ? P.CMD_FLAG_FUA : 0, offset, length);
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    await this.request(P.CMD_WRITE_ZEROES, options?.fua ? P.CMD_FLAG_FUA : 0, offset, length);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length: Math.min(length, this.size - offset), hole: false, zero: false }];
  }

  /** Requests waiting for a reply. */
  get inFlight(): number {
    return this.pending.size;
  }

  get isBroken(): boolean {
    return this.failure !== undefined;
  }

  /** The server closed the connection in order (e.g. its idle timeout), not a reset or our close. */
  get closedByServer(): boolean {
    return this.endedByServer;
  }

  /** Sends NBD_CMD_DISC once in-flight requests are answered, then closes the socket. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (!this.failure) {
      await Promise.allSettled([...this.pending.values()].map((p) => new Promise<void>((resolve) => {
        const { resolve: done, reject } = p;
        p.resolve = (data) => { done(data); resolve(); };
        p.reject = (error) => { reject(error); resolve(); };
      })));
      const header = encodeRequest({ type: P.CMD_DISC, flags: 0, cookie: this.nextHandle++, offset: 0, length: 0 });
      await new Promise<void>((resolve) => this.socket.end(header, () => resolve()));
    }
    this.socket.destroy();
    this.failAll(new BlockError('ESHUTDOWN', `NBD client for ${this.uri} is closed`));
  }

  /** Drops the connection at once, failing every pending request (used on timeouts). */
  destroy(reason: string): void {
    this.failAll(new BlockError('EIO', reason));
    this.socket.destroy();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private request(type: number, flags: number, offset: number, length: number, payload?: Buffer, into?: Buffer): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new BlockError('ESHUTDOWN', `NBD client for ${this.uri} is closing`));
    const handle = this.nextHandle++;
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(handle, { type, length, into, resolve, reject });
      this.socket.write(encodeRequest({ type, flags, cookie: handle, offset, length }));
      if (payload) this.socket.write(payload);
    });
  }

  private async receiveReplies(): Promise<void> {
    try {
      for (;;) {
        const header = await this.reader.readExactly(SIMPLE_REPLY_HEADER_BYTES);
        const reply = decodeSimpleReply(header);
        if (!reply) throw new Error(`unexpected reply magic 0x${header.readUInt32BE(0).toString(16)}`);
        const { errno: error, cookie: handle } = reply;
        const pending = this.pending.get(handle);
        if (!pending) throw new Error(`reply for unknown handle ${handle}`);
        if (error !== 0) {
          this.pending.delete(handle);
          const code = blockErrorCode(error);
          pending.reject(new BlockError(code, `NBD server ${this.uri} answered ${code} (${error})`));
          continue;
        }
        // Stays pending until its payload is in: a connection lost mid-payload must fail it too.
        const data = pending.type !== P.CMD_READ ? Buffer.alloc(0)
          : pending.into ? await this.reader.readInto(pending.into) : await this.reader.readExactly(pending.length);
        this.pending.delete(handle);
        pending.resolve(data);
      }
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      this.failAll(new BlockError(this.closing ? 'ESHUTDOWN' : 'EIO', `NBD connection to ${this.uri} lost: ${detail}`));
      this.socket.destroy();
    }
  }

  private failAll(error: Error): void {
    this.failure ??= error;
    for (const pending of this.pending.values()) pending.reject(this.failure);
    this.pending.clear();
  }
}

/** NBD_OPT_STARTTLS, then the TLS handshake on the same socket; the options go on over TLS. */
async function requestTls(socket: Socket, reader: SocketReader, startTls: () => Promise<Socket>): Promise<Socket> {
  socket.write(encodeOption(P.OPT_STARTTLS));
  const reply = decodeOptionReplyHeader(await reader.readExactly(OPTION_REPLY_HEADER_BYTES));
  if (!reply) throw new Error('bad option reply magic');
  const { type } = reply;
  const body = await reader.readExactly(reply.length);
  if (type !== P.REP_ACK) {
    const said = body.length ? ` (${body.toString('utf8').slice(0, 200)})` : '';
    throw new TlsRefused(`the server does not offer TLS${said}`, 'use an nbd:// URI for this server, or start it with --tls-creds');
  }
  try {
    return await startTls();
  } catch (error) {
    throw new TlsRefused(`TLS handshake failed: ${(error as Error).message}`, 'check that the server certificate is signed by DIR/ca-cert.pem and names the host, and that the client certificate is accepted');
  }
}

interface Negotiated { size: number; flags: number; constraints?: BlockSizeConstraints }

async function negotiate(socket: Socket, reader: SocketReader, exportName: string, startTls?: () => Promise<Socket>): Promise<Negotiated> {
  const greeting = decodeGreeting(await reader.readExactly(GREETING_BYTES));
  if ('problem' in greeting) throw new Error(greeting.problem);
  const { handshakeFlags } = greeting;
  if (!(handshakeFlags & P.FLAG_FIXED_NEWSTYLE)) throw new Error('server does not speak fixed newstyle NBD');
  socket.write(encodeClientFlags(P.CLIENT_FLAG_FIXED_NEWSTYLE | (handshakeFlags & P.FLAG_NO_ZEROES ? P.CLIENT_FLAG_NO_ZEROES : 0)));
  if (startTls) socket = await requestTls(socket, reader, startTls);

  socket.write(encodeOption(P.OPT_GO, encodeExportRequest(Buffer.from(exportName, 'utf8'), [P.INFO_BLOCK_SIZE])));

  let size: number | undefined;
  let flags = 0;
  let constraints: BlockSizeConstraints | undefined;
  for (;;) {
    const reply = decodeOptionReplyHeader(await reader.readExactly(OPTION_REPLY_HEADER_BYTES));
    if (!reply) throw new Error('bad option reply magic');
    const { type } = reply;
    const body = await reader.readExactly(reply.length);
    if (type === P.REP_ACK) break;
    if (type === P.REP_INFO) {
      const info = decodeInfo(body);
      if (info.kind === 'export') {
        size = info.size;
        flags = info.transmissionFlags;
      } else if (info.kind === 'block-size') {
        constraints = { ...info.limits, maximum: Math.min(info.limits.maximum, P.MAX_REQUEST_BYTES) };
      }
      continue;
    }
    if (isOptionError(type)) {
      const message = body.toString('utf8');
      // The error constants are negative in JavaScript (bit 31 set); the wire value is unsigned.
      if (type === P.REP_ERR_TLS_REQD >>> 0) throw new TlsRefused('the server requires TLS', 'connect with an nbds:// URI and --tls-creds DIR (or ?tls-certificates=DIR)');
      const what = type === P.REP_ERR_UNKNOWN >>> 0 ? `export '${exportName}' not present` : `option refused (0x${type.toString(16)})`;
      throw new Error(message ? `${what}: ${message}` : what);
    }
  }
  if (size === undefined) throw new Error('server sent no export information');
  return { size, flags, constraints };
}
