// Host-side client of qemu-guest-agent over the unix socket QEMU serves for the
// org.qemu.guest_agent.0 port: handshake, commands with timeouts, guest-exec with polling.
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomInt } from 'node:crypto';
import type {
  AgentExecStatus,
  AgentFilesystem,
  AgentFreezeStatus,
  AgentInfo,
  AgentReply,
  AgentShutdownMode,
} from './agent-protocol.js';
import { AgentReplyReader } from './agent-replies.js';
import { AgentCommandFailed, AgentDisconnected, AgentTimeout } from './errors.js';
import { connectWithRetry } from './unix-socket.js';

export interface AgentConnectOptions {
  /** Budget for the socket to appear and the agent to answer the handshake (default 10 s). */
  readonly timeoutMs?: number;
  /** Default timeout of each later command (default 30 s: TCG guests are slow). */
  readonly commandTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface ExecOptions {
  readonly input?: Buffer;
  /** For the whole run, start to exit (default: the command timeout). */
  readonly timeoutMs?: number;
}

export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  readonly signal?: number;
}

/** A handshake that is not answered is sent again this often: the agent may start later. */
const SYNC_RESEND_MS = 1000;
const EXEC_POLL_MS = [50, 100, 200, 400];

interface Waiter {
  readonly command: string;
  readonly resolve: (reply: AgentReply) => void;
  readonly reject: (error: Error) => void;
}

export class GuestAgent {
  readonly #reader = new AgentReplyReader();
  /** Replies are matched to requests in order: one waiter per request in flight. */
  readonly #waiters: Waiter[] = [];
  /** Serialises commands; a timed-out command leaves a reply in flight, so the next one resyncs. */
  #queue: Promise<unknown> = Promise.resolve();
  #needsSync = true;
  #closed = false;
  #syncListener?: (reply: AgentReply) => void;

  private constructor(
    private readonly socket: Socket,
    readonly socketPath: string,
    private readonly commandTimeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      for (const reply of this.#reader.push(chunk)) this.#deliver(reply);
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.#closed = true;
      for (const waiter of this.#waiters.splice(0)) waiter.reject(new AgentDisconnected(socketPath, waiter.command));
    });
  }

  /**
   * Connects (retrying until QEMU has created the socket) and performs the guest-sync-delimited
   * handshake, resending it until the agent answers with our own id. Throws AgentTimeout.
   */
  static async connect(socketPath: string, options: AgentConnectOptions = {}): Promise<GuestAgent> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    const timeout = () => new AgentTimeout('guest-sync-delimited', timeoutMs, socketPath);
    const socket = await connectWithRetry(socketPath, deadline, timeout, options.signal);
    const agent = new GuestAgent(socket, socketPath, options.commandTimeoutMs ?? 30_000);
    try {
      await agent.#sync(deadline, timeout, options.signal);
    } catch (error) {
      agent.close();
      throw error;
    }
    return agent;
  }

  #deliver(reply: AgentReply): void {
    if (this.#syncListener) {
      this.#syncListener(reply);
      return;
    }
    this.#waiters.shift()?.resolve(reply);
  }

  /**
   * Sends guest-sync-delimited until its id comes back; replies before it are dropped. Resends
   * (with a new id) only while the agent is silent: once it answers an older one, it is up and
   * the newest id follows in order.
   */
  async #sync(deadline: number, timeout: () => Error, signal?: AbortSignal): Promise<void> {
    const sentIds = new Set<number>();
    let expectedId = -1;
    let agentAnswered = false;
    let wake = () => {};
    this.#syncListener = (reply) => {
      if (reply.return === expectedId) {
        this.#needsSync = false;
        wake();
      } else if (typeof reply.return === 'number' && sentIds.has(reply.return)) {
        agentAnswered = true;
      }
    };
    const onAbort = () => wake();
    signal?.addEventListener('abort', onAbort);
    this.socket.on('close', onAbort);
    try {
      this.#needsSync = true;
      while (this.#needsSync) {
        signal?.throwIfAborted();
        if (this.#closed) throw new AgentDisconnected(this.socketPath, 'guest-sync-delimited');
        const left = deadline - Date.now();
        if (left <= 0) throw timeout();
        if (!agentAnswered || expectedId === -1) {
          expectedId = randomInt(1, 2 ** 47);
          sentIds.add(expectedId);
          // A leading 0xFF makes the agent drop any partial request a previous client left behind.
          const request = JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id: expectedId } });
          this.socket.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`${request}\n`)]));
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, agentAnswered ? left : Math.min(SYNC_RESEND_MS, left));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    } finally {
      this.#syncListener = undefined;
      signal?.removeEventListener('abort', onAbort);
      this.socket.off('close', onAbort);
    }
  }

  /** Sends one command and waits for its reply; `expectReply: false` for guest-shutdown. */
  #request(command: string, args: object | undefined, timeoutMs: number, expectReply = true): Promise<unknown> {
    const run = async (): Promise<unknown> => {
      if (this.#closed) throw new AgentDisconnected(this.socketPath, command);
      if (this.#needsSync) {
        await this.#sync(Date.now() + timeoutMs, () => new AgentTimeout('guest-sync-delimited', timeoutMs, this.socketPath));
      }
      const line = `${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`;
      if (!expectReply) {
        this.socket.write(line);
        // An error reply may still come; resync before the next command so it cannot be misread.
        this.#needsSync = true;
        return undefined;
      }
      const reply = await new Promise<AgentReply>((resolve, reject) => {
        const timer = setTimeout(() => {
          const index = this.#waiters.indexOf(waiter);
          if (index !== -1) this.#waiters.splice(index, 1);
          this.#needsSync = true;
          reject(new AgentTimeout(command, timeoutMs, this.socketPath));
        }, timeoutMs);
        const waiter: Waiter = {
          command,
          resolve: (value) => {
            clearTimeout(timer);
            resolve(value);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        };
        this.#waiters.push(waiter);
        this.socket.write(line);
      });
      if (reply.error) throw new AgentCommandFailed(command, reply.error.class, reply.error.desc);
      return reply.return;
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  ping(): Promise<void> {
    return this.#request('guest-ping', undefined, this.commandTimeoutMs).then(() => undefined);
  }

  info(): Promise<AgentInfo> {
    return this.#request('guest-info', undefined, this.commandTimeoutMs) as Promise<AgentInfo>;
  }

  fsinfo(): Promise<AgentFilesystem[]> {
    return this.#request('guest-get-fsinfo', undefined, this.commandTimeoutMs) as Promise<AgentFilesystem[]>;
  }

  /** Runs `path args` in the guest and waits for it to exit; output is captured in full. */
  async exec(path: string, args: string[], options: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    const pid = await this.execStart(path, args, { captureOutput: true, input: options.input, timeoutMs });
    const status = await this.execWait(pid, { deadline, what: `guest-exec ${path}`, timeoutMs });
    return {
      exitCode: status.exitcode ?? (status.signal !== undefined ? 128 + status.signal : -1),
      stdout: Buffer.from(status['out-data'] ?? '', 'base64'),
      stderr: Buffer.from(status['err-data'] ?? '', 'base64'),
      ...(status.signal !== undefined ? { signal: status.signal } : {}),
    };
  }

  /** Starts `path args` in the guest (guest-exec) and returns its guest PID without waiting. */
  async execStart(path: string, args: string[], options: { captureOutput?: boolean; input?: Buffer; timeoutMs?: number } = {}): Promise<number> {
    const started = (await this.#request(
      'guest-exec',
      { path, arg: args, 'capture-output': options.captureOutput ?? false, ...(options.input ? { 'input-data': options.input.toString('base64') } : {}) },
      options.timeoutMs ?? this.commandTimeoutMs,
    )) as { pid: number };
    return started.pid;
  }

  /** One guest-exec-status: whether the process exited, its code, captured output. */
  execStatus(pid: number, timeoutMs = this.commandTimeoutMs): Promise<AgentExecStatus> {
    return this.#request('guest-exec-status', { pid }, timeoutMs) as Promise<AgentExecStatus>;
  }

  /**
   * Polls guest-exec-status until the process exits (quickly at first, then every 400 ms).
   * Throws AgentTimeout at `deadline`, or the abort reason when `signal` fires.
   */
  async execWait(pid: number, options: { deadline?: number; timeoutMs?: number; what?: string; signal?: AbortSignal } = {}): Promise<AgentExecStatus> {
    const deadline = options.deadline ?? Infinity;
    for (let attempt = 0; ; attempt++) {
      options.signal?.throwIfAborted();
      const left = deadline - Date.now();
      if (left <= 0) throw new AgentTimeout(options.what ?? `guest-exec-status ${pid}`, options.timeoutMs ?? 0, this.socketPath);
      const status = await this.execStatus(pid, Math.min(left, this.commandTimeoutMs));
      if (status.exited) return status;
      const pause = Math.min(EXEC_POLL_MS[Math.min(attempt, EXEC_POLL_MS.length - 1)]!, Math.max(0, deadline - Date.now()));
      await sleep(pause, undefined, options.signal ? { signal: options.signal } : undefined);
    }
  }

  /** guest-file-open: a handle for `path` in the guest, opened with fopen()'s `mode` ("r", "w", …). */
  fileOpen(path: string, mode: 'r' | 'w' | 'a'): Promise<number> {
    return this.#request('guest-file-open', { path, mode }, this.commandTimeoutMs) as Promise<number>;
  }

  /** guest-file-read of at most `count` bytes; `eof` once the file has no more. */
  async fileRead(handle: number, count: number): Promise<{ data: Buffer; eof: boolean }> {
    const reply = (await this.#request('guest-file-read', { handle, count }, this.commandTimeoutMs)) as { count: number; 'buf-b64': string; eof: boolean };
    return { data: Buffer.from(reply['buf-b64'], 'base64'), eof: reply.eof };
  }

  /** guest-file-write of all of `data` (the agent writes it in one call). */
  async fileWrite(handle: number, data: Buffer): Promise<void> {
    const reply = (await this.#request('guest-file-write', { handle, 'buf-b64': data.toString('base64') }, this.commandTimeoutMs)) as { count: number };
    if (reply.count !== data.length) throw new AgentCommandFailed('guest-file-write', 'ShortWrite', `wrote ${reply.count} of ${data.length} bytes`);
  }

  fileClose(handle: number): Promise<void> {
    return this.#request('guest-file-close', { handle }, this.commandTimeoutMs).then(() => undefined);
  }

  /** Freezes the guest's filesystems; returns how many were frozen. */
  fsfreeze(): Promise<number> {
    return this.#request('guest-fsfreeze-freeze', undefined, this.commandTimeoutMs) as Promise<number>;
  }

  /** Thaws the guest's filesystems; returns how many were thawed. */
  fsthaw(): Promise<number> {
    return this.#request('guest-fsfreeze-thaw', undefined, this.commandTimeoutMs) as Promise<number>;
  }

  fsfreezeStatus(): Promise<AgentFreezeStatus> {
    return this.#request('guest-fsfreeze-status', undefined, this.commandTimeoutMs) as Promise<AgentFreezeStatus>;
  }

  /** Asks the guest to shut down. The agent sends no reply on success: watch QEMU exit instead. */
  async shutdown(mode: AgentShutdownMode = 'powerdown'): Promise<void> {
    await this.#request('guest-shutdown', { mode }, this.commandTimeoutMs, false);
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#closed = true;
    this.socket.destroy();
  }
}

export interface WaitForAgentOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  readonly commandTimeoutMs?: number;
}

/**
 * Waits until the guest agent answers (QEMU may not have created the socket yet, the guest may
 * still be booting) and returns the connected client. Throws AgentTimeout, or the abort reason.
 */
export function waitForAgent(socketPath: string, options: WaitForAgentOptions): Promise<GuestAgent> {
  return GuestAgent.connect(socketPath, options);
}
