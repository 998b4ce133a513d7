// The write path's client over HTTP (routes in http-protocol.ts): a WriteTarget for
// `http+unix:///?socket=PATH` and `http://HOST:PORT`. Counts every byte it puts on the wire.
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { LazybootError } from '../base/errors.js';
import type { CommitResult, ImageCommit, ObjectCommit, ObjectCommitResult, ObjectSummary, OfferedBlock, SessionRequest, SessionStart, StoredBlocks, WireCounters, WriteTarget } from '../repo/write-target.js';
import { API_PREFIX, encodeCommitBody, encodeFrameHeader, fromWireError, type WireError } from './http-protocol.js';

/** The repository's write path did not answer (refused, reset, timed out). */
export class WriteTargetUnreachable extends LazybootError {
  constructor(readonly uri: string, reason: string, options?: ErrorOptions) {
    super(`cannot write to the repository at ${uri} (${reason})`, 'check that `lazyboot repo serve --write-socket …` runs there, then retry: nothing is lost', options);
  }
}

/** No reply bytes for this long on a request in flight: the server is gone or stuck. */
const STALL_MS = 60_000;

export interface HttpEndpoint {
  readonly socketPath?: string;
  readonly host?: string;
  readonly port?: number;
}

export class HttpWriteTarget implements WriteTarget {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 4 });
  private readonly sockets = new Set<Socket>();

  constructor(readonly uri: string, private readonly endpoint: HttpEndpoint, private readonly stallMs = STALL_MS) {}

  async manifest(ref: string): Promise<Buffer | undefined> {
    const reply = await this.exchange('GET', `/manifests/${encodeURIComponent(ref)}`, [], true);
    return reply.status === 404 ? undefined : reply.body;
  }

  async begin(request: SessionRequest): Promise<SessionStart> {
    return this.json(await this.exchange('POST', '/sessions', [Buffer.from(JSON.stringify(request))])) as SessionStart;
  }

  async missing(digests: Buffer): Promise<Uint8Array> {
    return new Uint8Array((await this.exchange('POST', '/missing', [digests])).body);
  }

  async putBlocks(blocks: Iterable<OfferedBlock> | AsyncIterable<OfferedBlock>): Promise<StoredBlocks> {
    async function* frames(): AsyncGenerator<Buffer> {
      for await (const block of blocks) {
        yield encodeFrameHeader(block.digest, block.data.length);
        yield block.data;
      }
    }
    return this.json(await this.exchange('POST', '/blocks', frames())) as StoredBlocks;
  }

  async commitImage(commit: ImageCommit): Promise<CommitResult> {
    const { digests, ...header } = commit;
    return this.json(await this.exchange('POST', '/commits', encodeCommitBody(header, digests))) as CommitResult;
  }

  async commitObject(commit: ObjectCommit): Promise<ObjectCommitResult> {
    const { data, ...header } = commit;
    return this.json(await this.exchange('POST', '/objects', encodeCommitBody(header, data))) as ObjectCommitResult;
  }

  async listObjects(kind: string, image?: string): Promise<ObjectSummary[]> {
    const query = new URLSearchParams({ kind, ...(image !== undefined ? { image } : {}) });
    return this.json(await this.exchange('GET', `/objects?${query}`, [])) as ObjectSummary[];
  }

  async readObject(image: string, kind: string, id: string): Promise<Buffer | undefined> {
    const reply = await this.exchange('GET', `/objects/${[image, kind, id].map(encodeURIComponent).join('/')}`, [], true);
    return reply.status === 404 ? undefined : reply.body;
  }

  async removeObjects(image: string, kind: string): Promise<number> {
    return (this.json(await this.exchange('DELETE', `/objects/${[image, kind].map(encodeURIComponent).join('/')}`, [])) as { removed: number }).removed;
  }

  wire(): WireCounters {
    let bytesSent = 0;
    let bytesReceived = 0;
    for (const socket of this.sockets) {
      bytesSent += socket.bytesWritten;
      bytesReceived += socket.bytesRead;
    }
    return { bytesSent, bytesReceived };
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }

  private json(reply: { body: Buffer }): unknown {
    return JSON.parse(reply.body.toString('utf8'));
  }

  /**
   * One request; the body goes out piece by piece with backpressure. A refusal becomes the typed
   * error the repository raised (unless `allow404`: then the caller reads the status).
   */
  private exchange(method: string, path: string, body: Iterable<Buffer> | AsyncIterable<Buffer>, allow404 = false): Promise<{ status: number; body: Buffer }> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (error: Error): void => {
        if (settled) return;
        settled = true;
        request.destroy();
        reject(error);
      };
      const request = httpRequest({
        method, path: API_PREFIX + path, agent: this.agent,
        ...(this.endpoint.socketPath ? { socketPath: this.endpoint.socketPath } : { host: this.endpoint.host, port: this.endpoint.port }),
        headers: { 'content-type': 'application/octet-stream' },
      }, (response: IncomingMessage) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', (error) => fail(new WriteTargetUnreachable(this.uri, error.message, { cause: error })));
        response.on('end', () => {
          if (settled) return;
          settled = true;
          const replyBody = Buffer.concat(chunks);
          const status = response.statusCode ?? 0;
          if (status < 300 || (allow404 && status === 404)) return resolve({ status, body: replyBody });
          let wire: WireError;
          try {
            wire = JSON.parse(replyBody.toString('utf8')) as WireError;
          } catch {
            wire = { error: 'WriteRefused', message: `the repository at ${this.uri} answered HTTP ${status}` };
          }
          reject(fromWireError(wire));
        });
      });
      request.on('socket', (socket) => this.sockets.add(socket));
      request.setTimeout(this.stallMs, () => fail(new WriteTargetUnreachable(this.uri, `no answer for ${this.stallMs / 1000} s`)));
      request.on('error', (error: NodeJS.ErrnoException) => fail(new WriteTargetUnreachable(this.uri, error.code ?? error.message, { cause: error })));
      void (async () => {
        for await (const piece of body) {
          if (settled) return;
          if (!request.write(piece)) await drainedOrClosed(request);
        }
        request.end();
      })().catch((error: Error) => fail(error));
    });
  }
}

function drainedOrClosed(request: ReturnType<typeof httpRequest>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      request.off('drain', done);
      request.off('close', done);
      resolve();
    };
    request.on('drain', done);
    request.on('close', done);
  });
}
