// Starting a server on a private unix socket (mode 0600 from the moment it exists, a stale socket
// file replaced, a live one refused) or on a TCP address: shared by the NBD server and the write
// path's HTTP server, which differ only in the error class they report a failure with.
import type { Server } from 'node:net';
import { createConnection } from 'node:net';
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import type { LazybootError } from './errors.js';

/** Makes the caller's error for a failure to listen: what went wrong, what to do, the cause. */
export type ListenError = (message: string, hint?: string, options?: ErrorOptions) => LazybootError;

export type ListenTarget = { readonly socketPath: string } | { readonly host: string; readonly port: number };

export interface Listening {
  /** The absolute socket path (unix socket), to unlink on close. */
  readonly socketPath?: string;
  /** The TCP host and the port bound (a requested port 0 becomes the one the system chose). */
  readonly host?: string;
  readonly port?: number;
}

/** Listens on `target`; a unix socket's folder is created 0700 and the socket is 0600. */
export async function listenPrivately(server: Server, target: ListenTarget, toError: ListenError): Promise<Listening> {
  if ('socketPath' in target) {
    const socketPath = resolvePath(target.socketPath);
    await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
    await removeStaleSocket(socketPath, toError);
    // The umask makes the socket 0600 from the moment it exists; chmod again to be sure.
    const previousUmask = process.umask(0o177);
    try {
      await listen(server, () => server.listen(socketPath), toError);
    } finally {
      process.umask(previousUmask);
    }
    await chmod(socketPath, 0o600);
    return { socketPath };
  }
  const { host, port } = target;
  await listen(server, () => server.listen(port, host), toError);
  const address = server.address();
  return { host, port: typeof address === 'object' && address ? address.port : port };
}

/** `HOST:PORT`, with an IPv6 host in brackets, for a URI. */
export function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function listen(server: Server, start: () => void, toError: ListenError): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(toError(`cannot listen: ${error.code ?? error.message}`, error.code === 'EADDRINUSE' ? 'is another server running there?' : undefined, { cause: error }));
    };
    server.once('error', onError);
    start();
    server.once('listening', () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Removes a socket file nobody listens on; refuses if a server answers there. */
async function removeStaleSocket(path: string, toError: ListenError): Promise<void> {
  try {
    const stat = await lstat(path);
    if (!stat.isSocket()) throw toError(`${path} exists and is not a socket`, 'choose another socket path');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw toError(`a server is already listening on ${path}`, 'stop it or choose another socket path');
  await unlink(path);
}
