// Reading what a TCP peer sends, for the port-forward tests (run-network-*).
import { connect } from 'node:net';

/** Connects to 127.0.0.1:port and returns what the peer sends before closing ('' if it reset). */
export function readAll(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
    socket.on('error', () => resolve(''));
    socket.on('close', () => resolve(text));
    socket.setTimeout(5000, () => socket.destroy());
  });
}
