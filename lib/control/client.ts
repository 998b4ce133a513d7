// The other end of a VM's control socket (server.ts): one request, one reply, for `lazyboot
// ps/pivot/stop` and any program that drives a running VM. A name without a live socket is one
// clear error; a stale socket found on the way (its VM died) is removed.
import { readdir, unlink } from 'node:fs/promises';
import net from 'node:net';
import { LazybootError } from '../base/errors.js';
import { ControlCommandFailed, LineSplitter, type ControlReply } from './protocol.js';
import { assertVmName, controlDir, socketPathOf } from './runtime-dir.js';
import { probeSocket } from './socket-probe.js';

export class VmNotFound extends LazybootError {
  constructor(name: string, dir: string) {
    super(`no running VM is named ${name} (no control socket in ${dir})`, 'see `lazyboot ps` for the running VMs and their names');
  }
}

export class ControlConnectionLost extends LazybootError {
  constructor(name: string, detail: string) {
    super(`the VM ${name} did not answer: ${detail}`, 'see `lazyboot ps`; the VM may have ended meanwhile');
  }
}

export interface CallOptions {
  readonly dir?: string;
  /** Give up waiting for the reply after this long (0 = wait as long as it takes, e.g. a pivot). */
  readonly timeoutMs?: number;
}

/** Sends `command` to the VM called `name`; resolves with its result, rejects with its error. */
export async function callVm<T = unknown>(name: string, command: string, args: Record<string, unknown> = {}, options: CallOptions = {}): Promise<T> {
  assertVmName(name);
  const dir = options.dir ?? controlDir();
  const socketPath = socketPathOf(name, dir);
  return new Promise<T>((resolve, reject) => {
    const socket = net.connect(socketPath);
    let settled = false;
    const finish = (action: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      action();
    };
    const timer = options.timeoutMs ? setTimeout(() => finish(() => reject(new ControlConnectionLost(name, `no reply to ${command} within ${options.timeoutMs} ms`))), options.timeoutMs) : undefined;
    const lines = new LineSplitter((line) => {
      const reply = JSON.parse(line) as ControlReply;
      if (reply.id !== 1) return;
      finish(() => (reply.ok ? resolve(reply.result as T) : reject(new ControlCommandFailed(name, reply.error))));
    });
    socket.on('connect', () => socket.write(`${JSON.stringify({ id: 1, command, args })}\n`));
    socket.on('data', (chunk: Buffer) => lines.push(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED') void unlink(socketPath).catch(() => undefined); // stale: its VM died
      finish(() => reject(error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? new VmNotFound(name, dir) : new ControlConnectionLost(name, error.message)));
    });
    socket.on('close', () => finish(() => reject(new ControlConnectionLost(name, `it closed the connection before answering ${command}`))));
  });
}

/** Names of the VMs with a live control socket; stale sockets found are removed. */
export async function runningVmNames(dir = controlDir()): Promise<string[]> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  const names: string[] = [];
  for (const entry of entries.filter((file) => file.endsWith('.sock')).sort()) {
    const socketPath = `${dir}/${entry}`;
    const verdict = await probeSocket(socketPath);
    if (verdict === 'alive') names.push(entry.slice(0, -'.sock'.length));
    else if (verdict === 'stale') await unlink(socketPath).catch(() => undefined);
  }
  return names;
}

/** A name for a VM of `image` that no running VM has: `IMAGE-1`, `IMAGE-2`, … */
export async function freeVmName(image: string, dir = controlDir()): Promise<string> {
  const base = image.replace(/@.*$/, '').replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 50) || 'vm';
  const taken = new Set(await runningVmNames(dir));
  for (let n = 1; ; n++) if (!taken.has(`${base}-${n}`)) return `${base}-${n}`;
}
