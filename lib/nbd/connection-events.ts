// What happens to the NBD server's client connections, as typed events: the server's owner decides
// what to show (`repo serve` logs each one, the COR device under the CLI none: QEMU is its only
// client and fetch failures are told by the device itself), and tests assert events, not log text.
import { quoteName } from './handshake.js';

/** Why the server closed a connection it had accepted. */
export type ClosedBy = 'handshake-timeout' | 'stall-timeout' | 'idle-timeout';

export type ConnectionEventDetail =
  /** Turned away at accept: the server holds its most connections. */
  | { readonly kind: 'refused'; readonly openConnections: number; readonly refusedSinceLast: number }
  /** The handshake ended with an export chosen: transmission begins. */
  | { readonly kind: 'opened'; readonly exportName: string; readonly writable: boolean; readonly structuredReplies: boolean; readonly tls: boolean }
  /** The server closes the connection: a limit of limits.ts ran out after `seconds`. */
  | { readonly kind: 'closing'; readonly reason: ClosedBy; readonly seconds: number }
  /** The client sent NBD_OPT_ABORT. */
  | { readonly kind: 'handshake-aborted' }
  /** The connection ended on an error: in the handshake (`failed`) or later (`dropped`). */
  | { readonly kind: 'ended'; readonly phase: 'handshake' | 'transmission'; readonly message: string }
  | { readonly kind: 'tls-error'; readonly message: string }
  /**
   * A request failed for a reason the client's errno alone does not explain (EIO, or an error
   * that is not a block error); `replyBegun`: a simple read reply was half sent, so the
   * connection is closed (the client cannot be told).
   */
  | { readonly kind: 'request-failed'; readonly exportName: string; readonly command: string; readonly offset: number; readonly length: number; readonly message: string; readonly replyBegun: boolean };

export type ConnectionEvent = ConnectionEventDetail & {
  /** Numbered from 1 in order of accept, per server. */
  readonly connection: number;
  /** `HOST:PORT`, or `unix socket`. */
  readonly peer: string;
};

/** The log line for an event (what `repo serve` prints). */
export function describeConnectionEvent(event: ConnectionEvent): string {
  return `connection ${event.connection} (${event.peer}): ${describeDetail(event)}`;
}

function describeDetail(event: ConnectionEventDetail): string {
  switch (event.kind) {
    case 'refused': {
      const more = event.refusedSinceLast > 0 ? ` (and ${event.refusedSinceLast} more refused since the last such line)` : '';
      return `refused: ${event.openConnections} connections open, the most this server accepts${more}`;
    }
    case 'opened': {
      const mode = event.writable ? 'read-write' : 'read-only';
      return `export ${quoteName(event.exportName)} (${mode}${event.structuredReplies ? ', structured replies' : ''}${event.tls ? ', TLS' : ''})`;
    }
    case 'closing':
      if (event.reason === 'handshake-timeout') return `handshake not finished after ${event.seconds} s: closing`;
      if (event.reason === 'stall-timeout') return `client has not read its replies for ${event.seconds} s: closing (stall timeout)`;
      return `idle for ${event.seconds} s: closing`;
    case 'handshake-aborted':
      return 'client aborted the handshake';
    case 'ended':
      return `${event.phase === 'handshake' ? 'handshake failed' : 'dropped'}: ${event.message}`;
    case 'tls-error':
      return `TLS: ${event.message}`;
    case 'request-failed':
      return event.replyBegun
        ? `${event.exportName}: ${event.command} at ${event.offset}+${event.length} failed after its reply began: ${event.message}; closing the connection`
        : `${event.exportName}: ${event.command} at ${event.offset}+${event.length} failed: ${event.message}`;
  }
}
