// Is anybody accepting on a unix socket? `alive` (a connection was accepted), `stale` (the file is
// there but nobody listens: its process died), or `absent`. Used to tell a VM name in use from the
// leftover of a VM that was killed.
import net from 'node:net';

const PROBE_TIMEOUT_MS = 2000;

export function probeSocket(socketPath: string): Promise<'alive' | 'stale' | 'absent'> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    const done = (verdict: 'alive' | 'stale' | 'absent') => {
      clearTimeout(timer);
      socket.destroy();
      resolve(verdict);
    };
    // A listener that does not accept within the timeout is alive but busy: never remove it.
    const timer = setTimeout(() => done('alive'), PROBE_TIMEOUT_MS);
    socket.once('connect', () => done('alive'));
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code === 'ENOENT' ? 'absent' : error.code === 'ECONNREFUSED' ? 'stale' : 'alive'));
  });
}
