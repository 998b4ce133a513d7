// A unix-socket proxy in front of an NBD server that watches what crosses it: every byte the server
// sends, and every READ request a client makes, per export (parsed from the client's side of the
// fixed-newstyle handshake and of the transmission phase). It stands for the link between a
// repository and a target, so tests can assert bytes and "no block fetched twice" on the wire.
import net from 'node:net';
import { rm } from 'node:fs/promises';
import * as P from '../../lib/nbd/protocol.js';
import { CLIENT_FLAGS_BYTES, decodeExportRequest, decodeOptionHeader, decodeRequest, OPTION_HEADER_BYTES, REQUEST_HEADER_BYTES } from '../../lib/nbd/wire.js';

export interface ProxiedRead {
  readonly exportName: string;
  readonly offset: number;
  readonly length: number;
}

export class NbdCountingProxy {
  /** Bytes the server sent to clients, all connections (handshakes and manifests included). */
  bytesToClients = 0;
  /** Bytes sent to clients on connections to exports whose name does not start with `manifest:`. */
  blockBytesToClients = 0;
  readonly reads: ProxiedRead[] = [];
  readonly #sockets = new Set<net.Socket>();
  readonly #parsers: ClientStreamParser[] = [];

  private constructor(private readonly server: net.Server, readonly socketPath: string) {}

  static async start(socketPath: string, upstreamPath: string): Promise<NbdCountingProxy> {
    await rm(socketPath, { force: true });
    let proxy: NbdCountingProxy | undefined;
    const server = net.createServer((client) => proxy!.#relay(client, upstreamPath));
    proxy = new NbdCountingProxy(server, socketPath);
    await new Promise<void>((resolve, reject) => server.listen(socketPath, resolve).once('error', reject));
    return proxy;
  }

  get uri(): string {
    return `nbd+unix:///?socket=${this.socketPath}`;
  }

  /** Bytes asked for by READs of block exports (manifests left out). */
  get requestedBlockBytes(): number {
    let bytes = 0;
    for (const read of this.reads) if (!read.exportName.startsWith('manifest:')) bytes += read.length;
    return bytes;
  }

  /** The export each connection chose, in the order they were opened (connections still in the handshake left out). */
  get exportsOpened(): string[] {
    return this.#parsers.flatMap((parser) => (parser.exportName === undefined ? [] : [parser.exportName]));
  }

  /** How many times each block of `blockSize` was covered by a READ of a block export. */
  readsPerBlock(blockSize: number): Map<number, number> {
    const counts = new Map<number, number>();
    for (const read of this.reads) {
      if (read.exportName.startsWith('manifest:')) continue;
      const first = Math.floor(read.offset / blockSize);
      const last = Math.floor((read.offset + read.length - 1) / blockSize);
      for (let b = first; b <= last; b++) counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    return counts;
  }

  #relay(client: net.Socket, upstreamPath: string): void {
    const upstream = net.connect(upstreamPath);
    const parser = new ClientStreamParser((read) => this.reads.push(read));
    this.#parsers.push(parser);
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on('error', () => { client.destroy(); upstream.destroy(); });
      socket.on('close', () => {
        this.#sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => {
      parser.push(chunk);
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (chunk: Buffer) => {
      this.bytesToClients += chunk.length;
      if (parser.exportName !== undefined && !parser.exportName.startsWith('manifest:')) this.blockBytesToClients += chunk.length;
      if (!client.write(chunk)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }
}

/** Follows the client's side of one NBD connection: the export it chose, then its READs. */
class ClientStreamParser {
  exportName: string | undefined;
  #buffered: Buffer = Buffer.alloc(0);
  #state: 'flags' | 'options' | 'transmission' = 'flags';
  #skip = 0;

  constructor(private readonly onRead: (read: ProxiedRead) => void) {}

  push(chunk: Buffer): void {
    this.#buffered = this.#buffered.length ? Buffer.concat([this.#buffered, chunk]) : chunk;
    for (;;) {
      if (this.#skip > 0) {
        const skipped = Math.min(this.#skip, this.#buffered.length);
        this.#skip -= skipped;
        this.#buffered = this.#buffered.subarray(skipped);
        if (this.#skip > 0) return;
      }
      if (!this.#step()) return;
    }
  }

  /** Consumes one unit (client flags, an option, a request header); false when more bytes are needed. */
  #step(): boolean {
    const data = this.#buffered;
    if (this.#state === 'flags') {
      if (data.length < CLIENT_FLAGS_BYTES) return false;
      this.#buffered = data.subarray(CLIENT_FLAGS_BYTES);
      this.#state = 'options';
      return true;
    }
    if (this.#state === 'options') {
      // After NBD_OPT_GO the next bytes are another option (the GO failed) or the first request.
      if (this.exportName !== undefined && data.length >= 4 && data.readUInt32BE(0) === P.REQUEST_MAGIC) {
        this.#state = 'transmission';
        return true;
      }
      if (data.length < OPTION_HEADER_BYTES) return false;
      const header = decodeOptionHeader(data);
      if (!header) throw new Error('NBD proxy: unexpected bytes in the handshake');
      const { option, length } = header;
      if (data.length < OPTION_HEADER_BYTES + length) return false;
      const payload = data.subarray(OPTION_HEADER_BYTES, OPTION_HEADER_BYTES + length);
      this.#buffered = data.subarray(OPTION_HEADER_BYTES + length);
      if (option === P.OPT_EXPORT_NAME) {
        this.exportName = payload.toString();
        this.#state = 'transmission';
      } else if (option === P.OPT_GO) {
        this.exportName = decodeExportRequest(payload)?.name ?? '';
      }
      return true;
    }
    if (data.length < REQUEST_HEADER_BYTES) return false;
    const request = decodeRequest(data);
    if (!request) throw new Error('NBD proxy: lost track of the request stream');
    const { type, offset, length } = request;
    this.#buffered = data.subarray(REQUEST_HEADER_BYTES);
    if (type === P.CMD_READ) this.onRead({ exportName: this.exportName ?? '', offset, length });
    if (type === P.CMD_WRITE) this.#skip = length;
    return true;
  }
}
