// A small typed QMP client: greeting + capabilities, commands matched to replies by id, events
// delivered with their data, timeouts and a closed connection that end in typed errors.
// (npm `node-qemu` was evaluated and not used: see README "Booting images".)
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpConnectionClosed, QmpError, QmpTimeout } from './errors.js';

export interface QmpEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
  readonly timestamp?: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  readonly version: { qemu: { major: number; minor: number; micro: number }; package: string };
  readonly capabilities: string[];
}

export interface QmpConnectOptions {
  /** Give up connecting (socket not there yet, no greeting) after this long. */
  readonly timeoutMs?: number;
  /** Abort connecting, e.g. when the QEMU process exits first. */
  readonly signal?: AbortSignal;
  /** Default timeout for every command. */
  readonly commandTimeoutMs?: number;
}

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

type EventListener = (event: QmpEvent) => void;

export class QmpClient {
  #nextId = 1;
  #buffer = '';
  #closedReason: string | undefined;
  readonly #pending = new Map<string, Pending>();
  readonly #eventListeners = new Set<EventListener>();
  readonly #closeListeners = new Set<(reason: string) => void>();

  private constructor(
    private readonly socket: net.Socket,
    readonly greeting: QmpGreeting,
    private readonly commandTimeoutMs: number,
    initialData: string,
  ) {
    socket.on('data', (chunk: string) => this.#receive(chunk));
    socket.on('error', (error) => this.#markClosed(error.message));
    socket.on('close', () => this.#markClosed('socket closed'));
    if (initialData) this.#receive(initialData);
  }

  /** Connects to QEMU's QMP socket (retrying while QEMU creates it) and negotiates capabilities. */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    const socket = await connectWithRetry(socketPath, deadline, timeoutMs, options.signal);
    socket.setEncoding('utf8');
    let greeting: QmpGreeting;
    let rest: string;
    try {
      ({ greeting, rest } = await readGreeting(socket, deadline, timeoutMs, options.signal));
    } catch (error) {
      socket.destroy();
      throw error;
    }
    const client = new QmpClient(socket, greeting, options.commandTimeoutMs ?? 30_000, rest);
    try {
      await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(1, deadline - Date.now()) });
    } catch (error) {
      await client.close();
      throw error;
    }
    return client;
  }

  get closed(): boolean {
    return this.#closedReason !== undefined;
  }

  /** Runs one command; resolves with its `return`, rejects with QmpError / QmpTimeout / QmpConnectionClosed. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.#closedReason !== undefined) return Promise.reject(new QmpConnectionClosed(this.#closedReason));
    const id = `lazyboot-${this.#nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new QmpTimeout(command, timeoutMs));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: resolve as (value: unknown) => void, reject, timer });
      const message: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) message.arguments = args;
      this.socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  /** Calls `listener` for every event, with its data. Returns the unsubscribe function. */
  onEvent(listener: EventListener): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  /** Calls `listener` once when the connection closes, with the reason. */
  onClose(listener: (reason: string) => void): () => void {
    if (this.#closedReason !== undefined) {
      queueMicrotask(() => listener(this.#closedReason!));
      return () => {};
    }
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  /** Resolves with the next event named `name` (and matching `match`, if given). */
  waitForEvent(name: string, options: { timeoutMs?: number; match?: (event: QmpEvent) => boolean } = {}): Promise<QmpEvent> {
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<QmpEvent>((resolve, reject) => {
      const finish = (error: Error | undefined, event?: QmpEvent) => {
        clearTimeout(timer);
        stopEvents();
        stopClose();
        if (error) reject(error);
        else resolve(event!);
      };
      const timer = setTimeout(() => finish(new QmpTimeout(`with event ${name}`, timeoutMs)), timeoutMs);
      const stopEvents = this.onEvent((event) => {
        if (event.event === name && (!options.match || options.match(event))) finish(undefined, event);
      });
      const stopClose = this.onClose((reason) => finish(new QmpConnectionClosed(reason)));
    });
  }

  async close(): Promise<void> {
    this.#markClosed('closed by lazyboot');
    if (!this.socket.destroyed) this.socket.destroy();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #receive(chunk: string): void {
    this.#buffer += chunk;
    let newline: number;
    while ((newline = this.#buffer.indexOf('\n')) !== -1) {
      const line = this.#buffer.slice(0, newline).trim();
      this.#buffer = this.#buffer.slice(newline + 1);
      if (line) this.#dispatch(line);
    }
  }

  #dispatch(line: string): void {
    let message: Record<string, any>;
    try {
      message = JSON.parse(line);
    } catch {
      return; // QEMU only sends JSON; a broken line is not ours to act on
    }
    if (typeof message.event === 'string') {
      const event: QmpEvent = { event: message.event, data: message.data ?? {}, timestamp: message.timestamp };
      for (const listener of [...this.#eventListeners]) listener(event);
      return;
    }
    const id = typeof message.id === 'string' ? message.id : undefined;
    const pending = id === undefined ? undefined : this.#pending.get(id);
    if (!pending) return; // a reply to a command that already timed out
    this.#pending.delete(id!);
    clearTimeout(pending.timer);
    if (message.error) {
      pending.reject(new QmpError(pending.command, String(message.error.class), String(message.error.desc)));
    } else {
      pending.resolve(message.return);
    }
  }

  #markClosed(reason: string): void {
    if (this.#closedReason !== undefined) return;
    this.#closedReason = reason;
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new QmpConnectionClosed(`${reason} while waiting for ${pending.command}`));
    }
    this.#pending.clear();
    for (const listener of [...this.#closeListeners]) listener(reason);
    this.#closeListeners.clear();
  }
}

async function connectWithRetry(socketPath: string, deadline: number, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  for (;;) {
    signal?.throwIfAborted();
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const socket = net.connect(socketPath);
        socket.once('connect', () => {
          socket.removeAllListeners('error');
          resolve(socket);
        });
        socket.once('error', reject);
      });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // QEMU creates the socket a few ms after it starts: wait for it, not for anything else.
      if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw new QmpConnectionClosed(`cannot connect to ${socketPath}: ${(error as Error).message}`);
      if (Date.now() >= deadline) throw new QmpTimeout(`on its QMP socket ${socketPath}`, timeoutMs);
      await sleep(10, undefined, { signal }).catch(() => signal?.throwIfAborted());
    }
  }
}

function readGreeting(socket: net.Socket, deadline: number, timeoutMs: number, signal?: AbortSignal): Promise<{ greeting: QmpGreeting; rest: string }> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onClose);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onData = (chunk: string) => {
      buffer += chunk;
      const newline = buffer.indexOf('\n');
      if (newline === -1) return;
      let parsed: any;
      try {
        parsed = JSON.parse(buffer.slice(0, newline));
      } catch {
        return fail(new QmpConnectionClosed('the peer did not send a QMP greeting'));
      }
      if (!parsed?.QMP) return fail(new QmpConnectionClosed('the peer did not send a QMP greeting'));
      cleanup();
      resolve({ greeting: parsed.QMP as QmpGreeting, rest: buffer.slice(newline + 1) });
    };
    const onClose = () => fail(new QmpConnectionClosed('closed before the QMP greeting'));
    const onAbort = () => fail(signal!.reason instanceof Error ? signal!.reason : new QmpConnectionClosed('aborted'));
    const timer = setTimeout(() => fail(new QmpTimeout('with a QMP greeting', timeoutMs)), Math.max(1, deadline - Date.now()));
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
