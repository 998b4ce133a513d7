// Connects to a unix socket that QEMU creates as a server, retrying while it does not exist yet.
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const RETRY_MS = 50;
const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED']);

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/**
 * Connects to `path`, retrying while the socket is absent or refuses, until `deadline`
 * (Date.now() milliseconds). Throws `onTimeout()` then, or the abort reason if `signal` fires.
 */
export async function connectWithRetry(
  path: string,
  deadline: number,
  onTimeout: () => Error,
  signal?: AbortSignal,
): Promise<Socket> {
  for (;;) {
    signal?.throwIfAborted();
    try {
      return await connectOnce(path);
    } catch (error) {
      if (!RETRYABLE.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
    }
    if (Date.now() + RETRY_MS > deadline) throw onTimeout();
    await sleep(RETRY_MS, undefined, { signal }).catch(() => undefined);
  }
}
