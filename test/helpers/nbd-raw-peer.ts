// A deliberately minimal NBD peer speaking raw bytes, for tests that must send what real clients
// never send (garbage, oversized or out-of-range requests, writes to read-only exports).
// Not a client library: lazyboot's own client lives in lib/nbd/client.ts.
import { createConnection, type Socket } from 'node:net';
import { once } from 'node:events';
import * as P from '../../lib/nbd/protocol.js';

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

  /** Exactly n bytes, or undefined if the server closed first. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer | undefined> {
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
    const greeting = await this.read(18);
    if (!greeting || greeting.readBigUInt64BE(0) !== P.NBDMAGIC) throw new Error('no NBD greeting');
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES);
    this.write(clientFlags);
  }

  /** Fixed newstyle greeting + NBD_OPT_GO for `name` (simple replies). Returns size and flags. */
  async go(name: string): Promise<{ size: number; flags: number }> {
    await this.greet();
    const data = exportNameData(name);
    this.write(Buffer.concat([optionHeader(P.OPT_GO, data.length), data]));
    let size = -1;
    let flags = 0;
    for (;;) {
      const header = await this.read(20);
      if (!header) throw new Error('server closed during NBD_OPT_GO');
      const type = header.readUInt32BE(12);
      const payload = (await this.read(header.readUInt32BE(16)))!;
      if (type === P.REP_ACK) return { size, flags };
      if (type & P.REP_FLAG_ERROR) throw new Error(`NBD_OPT_GO refused: ${payload.toString()}`);
      if (type === P.REP_INFO && payload.readUInt16BE(0) === P.INFO_EXPORT) {
        size = Number(payload.readBigUInt64BE(2));
        flags = payload.readUInt16BE(10);
      }
    }
  }

  /** Sends one request (with payload for writes) and returns the simple reply's error and data. */
  async request(type: number, offset: number, length: number, options: { payload?: Buffer; flags?: number; cookie?: number } = {}): Promise<{ error: number; data?: Buffer }> {
    this.sendRequest(type, offset, length, options);
    return this.readSimpleReply(type === P.CMD_READ ? length : 0);
  }

  sendRequest(type: number, offset: number, length: number, options: { payload?: Buffer; flags?: number; cookie?: number } = {}): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(P.REQUEST_MAGIC, 0);
    header.writeUInt16BE(options.flags ?? 0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(BigInt(options.cookie ?? 1), 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    this.write(options.payload ? Buffer.concat([header, options.payload]) : header);
  }

  async readSimpleReply(readLength: number): Promise<{ error: number; cookie: number; data?: Buffer }> {
    const reply = await this.read(16);
    if (!reply) throw new Error('server closed instead of replying');
    if (reply.readUInt32BE(0) !== P.SIMPLE_REPLY_MAGIC) throw new Error('not a simple reply');
    const error = reply.readUInt32BE(4);
    const cookie = Number(reply.readBigUInt64BE(8));
    if (error !== 0 || readLength === 0) return { error, cookie };
    return { error, cookie, data: await this.read(readLength) };
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The data of NBD_OPT_INFO / NBD_OPT_GO: the export name (length-prefixed) and no information requests. */
export function exportNameData(name: string | Buffer): Buffer {
  const nameBytes = Buffer.from(name);
  const data = Buffer.alloc(4 + nameBytes.length + 2);
  data.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(data, 4);
  return data;
}

export function optionHeader(option: number, length: number): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(P.IHAVEOPT, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(length, 12);
  return header;
}
