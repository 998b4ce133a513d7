// The write path's HTTP server (routes in http-protocol.ts) over a RepositoryWriter: started by
// `repo serve --write-socket PATH` (or `--write-listen 127.0.0.1:PORT`) beside the NBD server.
// It holds no session state, so any number of them may front one repository.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { unlink } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { LazybootError } from '../base/errors.js';
import { hostPort, listenPrivately } from '../base/listen.js';
import type { OfferedBlock, WriteTarget } from '../repo/write-target.js';
import { MalformedWriteRequest } from '../repo/errors.js';
import { MAX_BLOCK_SIZE } from '../repo/block-size.js';
import { DIGEST_BYTES } from '../repo/manifest-format.js';
import { isLoopbackHost } from '../nbd/tls.js';
import { API_PREFIX, FRAME_HEADER_BYTES, MAX_COMMIT_BYTES, MAX_JSON_BYTES, MAX_MISSING_BYTES, MAX_OBJECT_COMMIT_BYTES, statusOf, toWireError } from './http-protocol.js';
import { WriteServerFailed } from './errors.js';

export interface WriteServerOptions {
  readonly writer: WriteTarget;
  readonly socketPath?: string;
  readonly listen?: { host: string; port: number };
  readonly log?: (line: string) => void;
}

export interface WriteServer {
  /** `http+unix:///?socket=/abs/path` or `http://HOST:PORT`: what `snapshot --to` takes. */
  readonly uri: string;
  close(): Promise<void>;
}

export async function startWriteServer(options: WriteServerOptions): Promise<WriteServer> {
  if (!options.socketPath === !options.listen) throw new WriteServerFailed('give exactly one of a write socket or a write listen address');
  if (options.listen && !isLoopbackHost(options.listen.host)) {
    throw new WriteServerFailed(`the write path listens on loopback only, not ${options.listen.host} (it has no TLS or authentication yet)`, 'use --write-socket, or --write-listen 127.0.0.1:PORT');
  }
  const log = options.log ?? (() => {});
  const sockets = new Set<Socket>();
  const server = createServer((request, response) => {
    void handle(options.writer, request, response).catch((error: unknown) => {
      const wire = toWireError(error);
      if (!(error instanceof LazybootError)) log(`write ${request.method} ${request.url}: ${(error as Error).stack ?? String(error)}`);
      else log(`write ${request.method} ${request.url} refused: ${wire.message}`);
      if (response.headersSent) {
        response.destroy();
        return;
      }
      // The client may still be sending its body: read and drop the rest (bounded) before answering,
      // else it meets a broken pipe (EPIPE) instead of this reply. Then close.
      void drainBody(request, DRAIN_BEFORE_REPLY_BYTES).then(() => {
        if (!response.destroyed) response.writeHead(statusOf(error), { 'content-type': 'application/json', connection: 'close' }).end(JSON.stringify(wire));
      });
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.requestTimeout = 0; // a block upload may take long; the NBD-style stall bound is the socket's
  server.headersTimeout = 30_000;
  const { socketPath, host, port } = await listenPrivately(server, options.socketPath ? { socketPath: options.socketPath } : options.listen!,
    (message, hint, errorOptions) => new WriteServerFailed(`the write path: ${message}`, hint, errorOptions));
  const uri = socketPath ? `http+unix:///?socket=${socketPath}` : `http://${hostPort(host!, port!)}`;
  let closing: Promise<void> | undefined;
  return {
    uri,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        await closed;
        if (socketPath) await unlink(socketPath).catch(() => {});
      })();
      return closing;
    },
  };
}

async function handle(writer: WriteTarget, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://repository');
  const route = `${request.method} ${url.pathname.startsWith(API_PREFIX + '/') ? url.pathname.slice(API_PREFIX.length) : url.pathname}`;
  if (route.startsWith('GET /manifests/')) {
    const ref = decodePathPart(url.pathname.slice(`${API_PREFIX}/manifests/`.length));
    const bytes = await writer.manifest(ref);
    if (!bytes) return sendJson(response, 404, { error: 'UnknownImage', message: `unknown image ${JSON.stringify(ref)}` });
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length }).end(bytes);
    return;
  }
  if (route.startsWith('GET /objects/') || route.startsWith('DELETE /objects/')) {
    const [image, kind, id, ...rest] = url.pathname.slice(`${API_PREFIX}/objects/`.length).split('/').map(decodePathPart);
    if (request.method === 'DELETE' && image && kind && id === undefined) return sendJson(response, 200, { removed: await writer.removeObjects(image, kind) });
    if (request.method === 'GET' && image && kind && id && rest.length === 0) {
      const bytes = await writer.readObject(image, kind, id);
      if (!bytes) return sendJson(response, 404, { error: 'UnknownObject', message: `no ${kind} ${id} of ${image}` });
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length }).end(bytes);
      return;
    }
    throw new MalformedWriteRequest(`no route ${route}`);
  }
  switch (route) {
    case 'GET /objects': {
      const image = url.searchParams.get('image');
      return sendJson(response, 200, await writer.listObjects(url.searchParams.get('kind') ?? '', image ?? undefined));
    }
    case 'POST /objects': {
      const { header, rest } = splitCommitBody(await readBody(request, MAX_OBJECT_COMMIT_BYTES));
      const result = await writer.commitObject({
        image: text(header, 'image'), kind: text(header, 'kind'), session: text(header, 'session'), data: rest,
        ...(header.keep !== undefined ? { keep: Number(header.keep) } : {}),
        ...(header.replace !== undefined ? { replace: header.replace === true } : {}),
      });
      return sendJson(response, result.existing ? 200 : 201, result);
    }
    case 'POST /sessions': {
      const body = parseJson(await readBody(request, MAX_JSON_BYTES));
      return sendJson(response, 200, await writer.begin({
        name: text(body, 'name'), size: Number(body.size), blockSize: Number(body.blockSize),
        ...(body.parent !== undefined ? { parent: text(body, 'parent') } : {}),
      }));
    }
    case 'POST /missing': {
      const lacking = await writer.missing(await readBody(request, MAX_MISSING_BYTES));
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': lacking.length }).end(lacking);
      return;
    }
    case 'POST /blocks':
      return sendJson(response, 200, await writer.putBlocks(readFrames(request)));
    case 'POST /commits': {
      const { header, rest } = splitCommitBody(await readBody(request, MAX_COMMIT_BYTES));
      const result = await writer.commitImage({
        name: text(header, 'name'), version: Number(header.version), size: Number(header.size), blockSize: Number(header.blockSize),
        session: text(header, 'session'), digests: rest,
        ...(header.parent !== undefined ? { parent: text(header, 'parent') } : {}),
      });
      return sendJson(response, result.existing ? 200 : 201, result);
    }
    default:
      return sendJson(response, 404, { error: 'MalformedWriteRequest', message: `malformed write request: no route ${route}` });
  }
}

function sendJson(response: ServerResponse, status: number, value: unknown): void {
  const text = Buffer.from(JSON.stringify(value), 'utf8');
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': text.length }).end(text);
}

/** [u32 BE JSON length | JSON header | rest]: a commit of an image (rest: digests) or of an object (rest: its data). */
function splitCommitBody(body: Buffer): { header: Record<string, unknown>; rest: Buffer } {
  if (body.length < 4) throw new MalformedWriteRequest('commit without a header');
  const jsonLength = body.readUInt32BE(0);
  if (jsonLength > MAX_JSON_BYTES || 4 + jsonLength > body.length) throw new MalformedWriteRequest('commit header length out of range');
  return { header: parseJson(body.subarray(4, 4 + jsonLength)), rest: body.subarray(4 + jsonLength) };
}

function parseJson(bytes: Buffer): Record<string, unknown> {
  try {
    const value = JSON.parse(bytes.toString('utf8')) as unknown;
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch { /* below */ }
  throw new MalformedWriteRequest('the header is not a JSON object');
}

/** A string field of a request (a missing name must not become the image "undefined"). */
function text(body: Record<string, unknown>, key: string): string {
  const value = body[key];
  if (typeof value !== 'string') throw new MalformedWriteRequest(`${key} is not a string`);
  return value;
}

/** A %-escaped path segment; a broken escape is the client's error, not the server's. */
function decodePathPart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new MalformedWriteRequest(`a broken %-escape in ${JSON.stringify(part.slice(0, 256))}`);
  }
}

/**
 * Unread request bytes dropped before an error reply (a refused upload batch is at most a few
 * MiB); a client sending more gets the reply, then the connection closes under it.
 */
const DRAIN_BEFORE_REPLY_BYTES = 64 * 1024 * 1024;

/** The request body, chunk by chunk; leaving the loop early does not destroy the request (its reply is still to come). */
function bodyOf(request: IncomingMessage): AsyncIterable<Buffer> {
  return request.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>;
}

/** Resolves once the request body has ended, the request is gone, or `limit` more bytes came. */
function drainBody(request: IncomingMessage, limit: number): Promise<void> {
  if (request.complete || request.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    let dropped = 0;
    const done = (): void => {
      request.off('data', onData).off('end', done).off('close', done).off('error', done);
      resolve();
    };
    const onData = (chunk: Buffer): void => {
      dropped += chunk.length;
      if (dropped > limit) done();
    };
    request.on('data', onData).once('end', done).once('close', done).once('error', done);
    request.resume();
  });
}

async function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > limit) throw new MalformedWriteRequest(`a body of ${declared} bytes (at most ${limit})`);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of bodyOf(request)) {
    total += chunk.length;
    if (total > limit) throw new MalformedWriteRequest(`a body over ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** The block frames of an upload, one at a time as they arrive (bounded: one block plus a chunk). */
async function* readFrames(request: IncomingMessage): AsyncGenerator<OfferedBlock> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const take = (length: number): Buffer => {
    const joined = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    const taken = Buffer.from(joined.subarray(0, length)); // a copy: the rest stays pending
    pending = joined.length > length ? [joined.subarray(length)] : [];
    pendingBytes -= length;
    return taken;
  };
  let header: { digest: Buffer; length: number } | undefined;
  for await (const chunk of bodyOf(request)) {
    pending.push(chunk);
    pendingBytes += chunk.length;
    for (;;) {
      if (!header) {
        if (pendingBytes < FRAME_HEADER_BYTES) break;
        const bytes = take(FRAME_HEADER_BYTES);
        const length = bytes.readUInt32BE(DIGEST_BYTES);
        if (length === 0 || length > MAX_BLOCK_SIZE) throw new MalformedWriteRequest(`a block frame of ${length} bytes (1 byte to 4 MiB)`);
        header = { digest: bytes.subarray(0, DIGEST_BYTES), length };
      }
      if (pendingBytes < header.length) break;
      const data = take(header.length);
      const block = { digest: header.digest, data };
      header = undefined;
      yield block;
    }
  }
  if (header || pendingBytes > 0) throw new MalformedWriteRequest('the upload ends inside a block frame');
}
