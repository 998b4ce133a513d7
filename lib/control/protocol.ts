// The control socket's protocol: JSON lines over a unix socket, one request per line, one reply per
// request (matched by `id`; replies may come out of order). Small on purpose, so a shell with
// `socat` can speak it:
//   → {"id":1,"command":"status"}
//   ← {"id":1,"ok":true,"result":{"name":"debian-1","state":"running",…}}
//   → {"id":2,"command":"pivot","args":{"fill":true}}
//   ← {"id":2,"ok":false,"error":{"name":"StorageReadinessUnknown","message":"…","hint":"…"}}
// Commands are looked up in the server's registry (commands.ts); `help` lists them.
import { LazybootError } from '../base/errors.js';

/** Bumped when a request or reply changes incompatibly; `status` reports it. */
export const CONTROL_PROTOCOL_VERSION = 1;

export interface ControlRequest {
  readonly id: number | string;
  readonly command: string;
  readonly args?: Record<string, unknown>;
}

export interface ControlErrorBody {
  readonly name: string;
  readonly message: string;
  readonly hint?: string;
}

export type ControlReply =
  | { readonly id: number | string | null; readonly ok: true; readonly result: unknown }
  | { readonly id: number | string | null; readonly ok: false; readonly error: ControlErrorBody };

/** An error the VM's process sent back: printed as the same one line it would have printed itself. */
export class ControlCommandFailed extends LazybootError {
  constructor(vm: string, readonly remote: ControlErrorBody) {
    super(`${vm}: ${remote.message}`, remote.hint);
  }
}

/** Longest request line a server accepts (a request is a command name and a few arguments). */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** Splits a byte stream into lines, calling `onLine` per complete line; false when a line is too long. */
export class LineSplitter {
  #pending = '';
  constructor(private readonly onLine: (line: string) => void, private readonly maxBytes = Number.POSITIVE_INFINITY) {}

  push(chunk: Buffer | string): boolean {
    this.#pending += chunk.toString();
    let newline: number;
    while ((newline = this.#pending.indexOf('\n')) >= 0) {
      const line = this.#pending.slice(0, newline);
      this.#pending = this.#pending.slice(newline + 1);
      if (line.trim()) this.onLine(line);
    }
    return this.#pending.length <= this.maxBytes;
  }
}

export function errorBody(error: unknown): ControlErrorBody {
  if (error instanceof LazybootError) return { name: error.name, message: error.message, ...(error.hint ? { hint: error.hint } : {}) };
  return { name: 'Error', message: error instanceof Error ? error.message : String(error) };
}
