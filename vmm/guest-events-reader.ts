// Reads the guest's milestone events (one JSON object per line, e.g. {"event":"storage-ready",…})
// from the events port's unix socket. Connects as soon as QEMU has created the socket: a guest's
// write to the port blocks while no host side is connected.
// (guest/events.ts's GuestEvents reads the same lines, but its readline interface has no 'error'
// listener: a QEMU killed mid-boot resets the socket and that becomes an uncaught exception.)
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GuestEvent } from '../guest/events.js';

export type { GuestEvent } from '../guest/events.js';

export interface GuestEventsReader {
  close(): void;
}

export function readGuestEvents(socketPath: string, onEvent: (event: GuestEvent) => void, signal: AbortSignal): GuestEventsReader {
  let socket: net.Socket | undefined;
  let closed = false;
  const connect = async () => {
    while (!closed && !signal.aborted) {
      try {
        socket = await new Promise<net.Socket>((resolve, reject) => {
          const candidate = net.connect(socketPath);
          candidate.once('connect', () => resolve(candidate));
          candidate.once('error', reject);
        });
        break;
      } catch {
        await sleep(20);
      }
    }
    if (!socket) return;
    if (closed) return void socket.destroy();
    socket.on('error', () => {}); // QEMU exiting closes it; the VM learns that from the process
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) !== -1) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        try {
          const parsed = JSON.parse(line);
          if (typeof parsed?.event === 'string') onEvent(parsed as GuestEvent);
        } catch {
          // not an event line (e.g. noise before the hook ran): ignore
        }
      }
    });
  };
  void connect();
  return {
    close() {
      closed = true;
      socket?.destroy();
    },
  };
}
