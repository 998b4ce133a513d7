// Host side of the command stream ports (stdout, stderr, stdin): QEMU serves each on a unix
// socket; lazyboot connects at QEMU's start, so the guest sees a host on every port before any
// command runs (a guest read of a port without a host is an immediate end of file). The guest
// wrapper (command-script.ts) ends each output stream with a per-command token; everything before
// it is passed on as it arrives, with the sink's backpressure, the token itself is not.
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import type { StreamSockets } from './qemu-args.js';
import { connectWithRetry } from './unix-socket.js';
import { StreamPortClosed } from './errors.js';

/** A forward in progress: `done` resolves at the end token; `stop()` abandons it (the command was killed). */
export interface Forwarding {
  readonly done: Promise<void>;
  stop(): void;
}

/** Length of the longest tail of `bytes` that is a proper prefix of `token` (0 almost always). */
export function tokenStartAtEnd(bytes: Buffer, token: Buffer): number {
  for (let keep = Math.min(bytes.length, token.length - 1); keep > 0; keep--) {
    if (bytes[bytes.length - keep] === token[0] && bytes.subarray(bytes.length - keep).equals(token.subarray(0, keep))) return keep;
  }
  return 0;
}

/** One output port: paused between commands, so nothing is read while nobody takes it. */
export class OutputPort {
  #busy = false;
  #closed = false;

  constructor(private readonly socket: Socket, readonly name: string) {
    socket.pause();
    socket.on('error', () => socket.destroy());
    socket.on('close', () => (this.#closed = true));
  }

  /**
   * Passes every byte up to `token` to `sink` (waiting for its 'drain' when it is full); resolves
   * when the token has arrived. Holds back only a tail that could be the token's start (a line
   * that ends a chunk goes out at once: the host must see it while the command still runs).
   */
  forward(token: Buffer, sink: Writable): Forwarding {
    if (this.#busy) throw new Error(`${this.name} is already forwarding a command's output`);
    this.#busy = true;
    const socket = this.socket;
    let stop = () => {};
    const done = new Promise<void>((resolve, reject) => {
      let held = Buffer.alloc(0);
      const finish = (error?: Error) => {
        socket.off('data', onData);
        socket.off('close', onClose);
        socket.pause();
        this.#busy = false;
        if (error) reject(error);
        else resolve();
      };
      stop = () => finish();
      const write = (bytes: Buffer) => {
        if (bytes.length > 0 && !sink.write(bytes)) {
          socket.pause();
          sink.once('drain', () => socket.resume());
        }
      };
      const onData = (chunk: Buffer) => {
        const bytes = held.length > 0 ? Buffer.concat([held, chunk]) : chunk;
        const at = bytes.indexOf(token);
        if (at !== -1) {
          write(bytes.subarray(0, at));
          finish();
          return;
        }
        const keep = tokenStartAtEnd(bytes, token);
        write(bytes.subarray(0, bytes.length - keep));
        held = Buffer.from(bytes.subarray(bytes.length - keep));
      };
      const onClose = () => finish(new StreamPortClosed(this.name));
      if (this.#closed) return finish(new StreamPortClosed(this.name));
      socket.on('data', onData);
      socket.on('close', onClose);
      socket.resume();
    });
    return { done, stop: () => stop() };
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The stdin port: the host's input flows in; its end closes the connection, the guest then reads end of file. */
export class InputPort {
  #used = false;

  constructor(private readonly socket: Socket) {
    socket.on('error', () => socket.destroy());
    // Nothing comes back on stdin; discard whatever does so the socket never stalls.
    socket.resume();
  }

  /** Pipes `source` into the guest. Once per VM: after its end the guest has seen end of file. */
  feed(source: Readable): void {
    if (this.#used) throw new Error('the stdin port was already used by an earlier command of this VM');
    this.#used = true;
    source.pipe(this.socket);
  }

  close(): void {
    this.socket.destroy();
  }
}

export interface CommandStreams {
  readonly stdout: OutputPort;
  readonly stderr: OutputPort;
  readonly stdin: InputPort;
  close(): void;
}

/** Connects to the three stream sockets (retrying until QEMU has created them). */
export async function connectCommandStreams(sockets: StreamSockets, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<CommandStreams> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  const connect = (socketPath: string) => connectWithRetry(socketPath, deadline, () => new Error(`QEMU did not create ${socketPath}`), options.signal);
  const settled = await Promise.allSettled([connect(sockets.stdout), connect(sockets.stderr), connect(sockets.stdin)]);
  const failed = settled.find((result) => result.status === 'rejected');
  if (failed) {
    for (const result of settled) if (result.status === 'fulfilled') result.value.destroy();
    throw (failed as PromiseRejectedResult).reason;
  }
  const [stdout, stderr, stdin] = settled.map((result) => (result as PromiseFulfilledResult<Socket>).value) as [Socket, Socket, Socket];
  const ports = { stdout: new OutputPort(stdout, 'stdout'), stderr: new OutputPort(stderr, 'stderr'), stdin: new InputPort(stdin) };
  return {
    ...ports,
    close() {
      ports.stdout.close();
      ports.stderr.close();
      ports.stdin.close();
    },
  };
}
