// Typed errors of NBD a caller can act on: a client could not connect, a server could not listen,
// TLS credentials cannot be used. (Protocol failures inside a connection are internal: they end
// that connection and are logged.)
import { LazybootError } from '../base/errors.js';

/** Connecting or negotiating failed (no server, refused export, protocol error). */
export class NbdConnectError extends LazybootError {
  constructor(readonly uri: string, detail: string, options?: ErrorOptions & { hint?: string }) {
    super(`cannot open NBD export ${uri}: ${detail}`, options?.hint ?? 'check that the server runs and the export name is right', options);
  }
}

/** The server could not start listening. */
export class NbdListenFailed extends LazybootError {}

/** The TLS credentials cannot be used (missing or unreadable files, bad format). */
export class TlsCredentialsInvalid extends LazybootError {}
