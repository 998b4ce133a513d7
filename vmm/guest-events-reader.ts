// The VM's face onto the guest's milestone events (storage-ready, boot-complete, boot-failed):
// connects to the events port's socket as soon as QEMU has created it (a guest's write to the
// port blocks while no host side is connected) and hands each event on. Reading is guest/events.ts's job.
import { GuestEvents, type GuestEvent } from '../guest/events.js';

export type { GuestEvent } from '../guest/events.js';

export interface GuestEventsReader {
  close(): void;
}

export function readGuestEvents(socketPath: string, onEvent: (event: GuestEvent) => void, signal: AbortSignal): GuestEventsReader {
  let events: GuestEvents | undefined;
  let closed = false;
  // QEMU creates the socket before the guest runs: a short connect budget is plenty.
  void GuestEvents.connect(socketPath, { timeoutMs: 30_000, signal }).then(
    (connected) => {
      events = connected;
      if (closed) return void connected.close();
      connected.on('event', onEvent);
    },
    () => {
      // aborted (the VM is closing) or QEMU never made the socket: the VM learns why from QEMU itself
    },
  );
  return {
    close() {
      closed = true;
      events?.close();
    },
  };
}
