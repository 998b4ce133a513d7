// A running VM's control socket: listens on `NAME.sock` in the control dir (runtime-dir.ts), mode
// 0600, and answers JSON-line requests (protocol.ts) from its command registry (commands.ts).
// A socket left by a VM whose process died (nobody accepts on it) is stale: removed, and the name
// is free again; a socket that answers means the name is in use, and is refused.
import { rmdirSync, unlinkSync } from 'node:fs';
import { chmod, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { registerCleanup } from '../base/cleanup.js';
import { LazybootError } from '../base/errors.js';
import type { ControlCommands } from './commands.js';
import { errorBody, LineSplitter, MAX_REQUEST_BYTES, type ControlReply, type ControlRequest } from './protocol.js';
import { assertVmName, ensureControlDir, removeControlDirIfEmpty, socketPathOf } from './runtime-dir.js';
import { probeSocket } from './socket-probe.js';

export class VmNameInUse extends LazybootError {
  constructor(name: string) {
    super(`a running VM is already named ${name}`, 'choose another --name (see `lazyboot ps`), or stop that VM first with `lazyboot stop ' + name + '`');
  }
}

/** Frees `socketPath` if it is a stale socket; throws VmNameInUse if a VM answers on it. */
export async function claimSocketPath(name: string, socketPath: string): Promise<void> {
  const info = await lstat(socketPath).catch(() => undefined);
  if (!info) return;
  if (!info.isSocket()) throw new LazybootError(`${socketPath} exists and is not a socket`, 'remove it, or choose another --name');
  if ((await probeSocket(socketPath)) === 'alive') throw new VmNameInUse(name);
  await unlink(socketPath).catch(() => undefined); // stale: its VM is gone
}

export class ControlServer {
  readonly #server: net.Server;
  readonly #connections = new Set<net.Socket>();
  readonly #inFlight = new Set<Promise<void>>();
  #closing: Promise<void> | undefined;
  readonly #unregisterCleanup: () => void;

  private constructor(readonly name: string, readonly socketPath: string, private readonly commands: ControlCommands, private readonly dir: string) {
    this.#server = net.createServer((socket) => this.#serve(socket));
    // A Ctrl-C or an exit without close() leaves no socket behind either.
    this.#unregisterCleanup = registerCleanup({
      release: () => this.close(),
      releaseSync: () => {
        try {
          unlinkSync(socketPath);
          rmdirSync(dir);
        } catch {
          // gone already, or another VM's socket keeps the directory
        }
      },
    });
  }

  /** Claims NAME (refused if a live VM has it) and listens on its socket. */
  static async listen(name: string, commands: ControlCommands, options: { dir?: string } = {}): Promise<ControlServer> {
    assertVmName(name);
    const dir = await ensureControlDir(options.dir);
    const socketPath = socketPathOf(name, dir);
    await claimSocketPath(name, socketPath);
    const control = new ControlServer(name, socketPath, commands, dir);
    try {
      await new Promise<void>((resolve, reject) => {
        control.#server.once('error', (error: NodeJS.ErrnoException) => reject(error.code === 'EADDRINUSE' ? new VmNameInUse(name) : error));
        control.#server.listen(socketPath, () => resolve());
      });
    } catch (error) {
      control.#unregisterCleanup();
      throw error;
    }
    // The directory is 0700 already; the socket is the owner's alone as well.
    await chmod(socketPath, 0o600);
    return control;
  }

  /** Stops accepting, lets running requests answer, closes connections, removes the socket. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      await Promise.allSettled([...this.#inFlight]);
      for (const socket of this.#connections) socket.end();
      await closed;
      await unlink(this.socketPath).catch(() => undefined);
      await removeControlDirIfEmpty(this.dir);
      this.#unregisterCleanup();
    })();
    return this.#closing;
  }

  #serve(socket: net.Socket): void {
    this.#connections.add(socket);
    socket.on('close', () => this.#connections.delete(socket));
    socket.on('error', () => socket.destroy());
    const reply = (body: ControlReply) => {
      if (!socket.destroyed) socket.write(`${JSON.stringify(body)}\n`);
    };
    const lines = new LineSplitter((line) => {
      let request: ControlRequest;
      try {
        request = JSON.parse(line) as ControlRequest;
        if (typeof request !== 'object' || request === null || typeof request.command !== 'string') throw new Error('a request is {"id":…,"command":"…","args":{…}}');
      } catch (error) {
        return reply({ id: null, ok: false, error: { name: 'BadRequest', message: `bad request line: ${(error as Error).message}` } });
      }
      const id = typeof request.id === 'number' || typeof request.id === 'string' ? request.id : null;
      const args = typeof request.args === 'object' && request.args !== null ? request.args : {};
      const running = (async () => {
        try {
          reply({ id, ok: true, result: (await this.commands.run(request.command, args)) ?? null });
        } catch (error) {
          reply({ id, ok: false, error: errorBody(error) });
        }
      })();
      this.#inFlight.add(running);
      void running.finally(() => this.#inFlight.delete(running));
    }, MAX_REQUEST_BYTES);
    socket.on('data', (chunk: Buffer) => {
      if (!lines.push(chunk)) {
        reply({ id: null, ok: false, error: { name: 'BadRequest', message: `request line longer than ${MAX_REQUEST_BYTES} bytes` } });
        socket.end();
      }
    });
  }
}
