// Host side of the lazyboot events port: reads the JSON lines the guest hooks send
// (storage-ready, boot-complete, ...) from QEMU's unix socket and hands them out as typed events.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { GuestEventsClosed, GuestEventTimeout } from './errors.js';
import { connectWithRetry } from './unix-socket.js';

export type GuestEventName = 'storage-ready' | 'boot-complete' | 'boot-failed';

/** One line from the guest. `disk`, `driver` and `root` name what the guest's own driver bound. */
export interface GuestEvent {
  readonly event: GuestEventName | (string & {});
  /** Whole disk, e.g. /dev/vda. */
  readonly disk: string;
  /** Kernel driver bound to the disk, e.g. virtio_blk. */
  readonly driver: string;
  /** Mounted root device, e.g. /dev/vda2. */
  readonly root: string;
  /** Guest seconds since its kernel started. */
  readonly uptime: number;
  /** Which image sent it ("tiny", "debian") and which hook ("init", "initramfs", "systemd"). */
  readonly image?: string;
  readonly source?: string;
  readonly [field: string]: unknown;
}

interface GuestEventsMap {
  event: [GuestEvent];
  close: [];
}

export interface EventsConnectOptions {
  /** How long to keep retrying while QEMU has not created the socket yet (default 10 s). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface WaitForEventOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

function parseEvent(line: string): GuestEvent | undefined {
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value === 'object' && value !== null && typeof (value as { event?: unknown }).event === 'string') {
      return value as GuestEvent;
    }
  } catch {
    // A partial or foreign line (e.g. a host that connected mid-write): not an event.
  }
  return undefined;
}

export class GuestEvents extends EventEmitter<GuestEventsMap> {
  /** Every event received so far, in order: waitFor() looks here first, so none is missed. */
  readonly received: GuestEvent[] = [];
  #closed = false;

  private constructor(private readonly socket: Socket, readonly socketPath: string) {
    super();
    // Split lines by hand: a readline interface re-emits socket errors (QEMU killed mid-boot
    // resets the socket) as its own 'error', which would need a listener of its own.
    let partial = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const event = parseEvent(line.trim());
        if (!event) continue;
        this.received.push(event);
        this.emit('event', event);
      }
    });
    // A reset socket is a closed one: 'close' follows and tells the waiters.
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.#closed = true;
      this.emit('close');
    });
  }

  /** Connects to the events socket QEMU serves, retrying until QEMU has created it. */
  static async connect(socketPath: string, options: EventsConnectOptions = {}): Promise<GuestEvents> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const socket = await connectWithRetry(
      socketPath,
      Date.now() + timeoutMs,
      () => new GuestEventTimeout('connection', timeoutMs, socketPath),
      options.signal,
    );
    return new GuestEvents(socket, socketPath);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves with the first event named `name` (already received or yet to come). */
  waitFor(name: GuestEventName, options: WaitForEventOptions): Promise<GuestEvent> {
    return this.waitForMatch(name, (event) => event.event === name, options);
  }

  /** Resolves with the first event `matches` accepts (already received or yet to come); `what` names it in errors. */
  waitForMatch(what: string, matches: (event: GuestEvent) => boolean, options: WaitForEventOptions): Promise<GuestEvent> {
    const seen = this.received.find(matches);
    if (seen) return Promise.resolve(seen);
    if (this.#closed) return Promise.reject(new GuestEventsClosed(what, this.socketPath));
    return new Promise((resolve, reject) => {
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
        options.signal?.removeEventListener('abort', onAbort);
        settle();
      };
      const onEvent = (event: GuestEvent) => {
        if (matches(event)) finish(() => resolve(event));
      };
      const onClose = () => finish(() => reject(new GuestEventsClosed(what, this.socketPath)));
      const onAbort = () => finish(() => reject(options.signal?.reason));
      const timer = setTimeout(
        () => finish(() => reject(new GuestEventTimeout(what, options.timeoutMs, this.socketPath))),
        options.timeoutMs,
      );
      this.on('event', onEvent);
      this.on('close', onClose);
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Iterates over all events, past and future, until the socket closes. */
  async *[Symbol.asyncIterator](): AsyncGenerator<GuestEvent> {
    let index = 0;
    for (;;) {
      if (index < this.received.length) {
        yield this.received[index++];
        continue;
      }
      if (this.#closed) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.off('event', wake);
          this.off('close', wake);
          resolve();
        };
        this.on('event', wake);
        this.on('close', wake);
      });
    }
  }

  /** Sends one line to the guest (the tiny image reads requests from this port when it stays up). */
  send(line: string): Promise<void> {
    if (this.#closed) return Promise.reject(new GuestEventsClosed('a reply', this.socketPath));
    return new Promise((resolve, reject) => this.socket.write(`${line}\n`, (error) => (error ? reject(error) : resolve())));
  }

  close(): void {
    this.socket.destroy();
  }
}
