// A deliberately minimal NBD peer speaking raw bytes, for tests that must send what real clients
// never send (garbage, oversized or out-of-range requests, writes to read-only exports).
// Not a client library: lazyboot's own client lives in lib/nbd/client.ts.
import { createConnection, type Socket } from 'node:net';
import { once } from 'node:events';
import * as P from '../../lib/nbd/protocol.js';
import {
  decodeGreeting, decodeInfo, decodeOptionReplyHeader, decodeSimpleReply, encodeClientFlags, encodeExportRequest, encodeOption, encodeOptionHeader, encodeRequest,
  GREETING_BYTES, isOptionError, OPTION_REPLY_HEADER_BYTES, SIMPLE_REPLY_HEADER_BYTES,
} from '../../lib/nbd/wire.js';

export class RawPeer {
  private buffered = Buffer.alloc(0);
  private closed = false;
  private wake?: () => void;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake?.();
    });
    const end = (): void => {
      this.closed = true;
      this.wake?.();
    };
    socket.on('close', end);
    socket.on('error', end);
  }

  static async connect(socketPath: string): Promise<RawPeer> {
    const socket = createConnection(socketPath);
    await once(socket, 'connect');
    return new RawPeer(socket);
  }

  /**
   * Exactly n bytes, or undefined if the server closed first. The default wait is long: a reply
   * that comes is what tests check, and a loaded CI machine (a 32 MiB payload to skip) is slow.
   */
  async read(n: number, timeoutMs = 20_000): Promise<Buffer | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered.length < n) {
      if (this.closed) return undefined;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} bytes`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
    const result = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return result;
  }

  /** Resolves true once the server has closed the connection (within the timeout). */
  async closedByServer(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    return this.closed;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Reads the fixed newstyle greeting and answers it with the client flags: options may follow. */
  async greet(): Promise<void> {
    const greeting = await this.read(GREETING_BYTES);
    if (!greeting || 'problem' in decodeGreeting(greeting)) throw new Error('no NBD greeting');
    this.write(encodeClientFlags(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES));
  }

  /** Fixed newstyle greeting + NBD_OPT_GO for `name` (simple replies). Returns size and flags. */
  async go(name: string): Promise<{ size: number; flags: number }> {
    await this.greet();
    this.write(encodeOption(P.OPT_GO, exportNameData(name)));
    let size = -1;
    let flags = 0;
    for (;;) {
      const bytes = await this.read(OPTION_REPLY_HEADER_BYTES);
      if (!bytes) throw new Error('server closed during NBD_OPT_GO');
      const header = decodeOptionReplyHeader(bytes);
      if (!header) throw new Error('not an option reply');
      const payload = (await this.read(header.length))!;
      if (header.type === P.REP_ACK) return { size, flags };
      if (isOptionError(header.type)) throw new Error(`NBD_OPT_GO refused: ${payload.toString()}`);
      const info = header.type === P.REP_INFO ? decodeInfo(payload) : undefined;
      if (info?.kind === 'export') {
        size = info.size;
        flags = info.transmissionFlags;
      }
    }
  }

  /** Sends one request (with payload for writes) and returns the simple reply's error and data. */
  async request(type: number, offset: number, length: number, options: { payload?: Buffer; flags?: number; cookie?: number } = {}): Promise<{ error: number; data?: Buffer }> {
    this.sendRequest(type, offset, length, options);
    return this.readSimpleReply(type === P.CMD_READ ? length : 0);
  }

  sendRequest(type: number, offset: number, length: number, options: { payload?: Buffer; flags?: number; cookie?: number } = {}): void {
    const header = encodeRequest({ type, flags: options.flags ?? 0, cookie: BigInt(options.cookie ?? 1), offset, length });
    this.write(options.payload ? Buffer.concat([header, options.payload]) : header);
  }

  async readSimpleReply(readLength: number): Promise<{ error: number; cookie: number; data?: Buffer }> {
    const bytes = await this.read(SIMPLE_REPLY_HEADER_BYTES);
    if (!bytes) throw new Error('server closed instead of replying');
    const reply = decodeSimpleReply(bytes);
    if (!reply) throw new Error('not a simple reply');
    const error = reply.errno;
    const cookie = Number(reply.cookie);
    if (error !== 0 || readLength === 0) return { error, cookie };
    return { error, cookie, data: await this.read(readLength) };
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The data of NBD_OPT_INFO / NBD_OPT_GO: the export name (length-prefixed) and no information requests. */
export function exportNameData(name: string | Buffer): Buffer {
  return encodeExportRequest(name);
}

/** An option header announcing `length` bytes of data (sent separately, or never: hostile tests). */
export function optionHeader(option: number, length: number): Buffer {
  return encodeOptionHeader(option, length);
}
