// Typed errors of the write path: the server could not start, the repository's write path did
// not answer, or it refused a write (each one line, with what to do).
import { LazybootError } from '../base/errors.js';

/** A refusal by the repository that has no class of its own on this side. */
export class WriteRefused extends LazybootError {}

/** The repository's write path did not answer (refused, reset, timed out). */
export class WriteTargetUnreachable extends LazybootError {
  constructor(readonly uri: string, reason: string, options?: ErrorOptions) {
    super(`cannot write to the repository at ${uri} (${reason})`, 'check that `lazyboot repo serve --write-socket …` runs there, then retry: nothing is lost', options);
  }
}

/** The write server could not start. */
export class WriteServerFailed extends LazybootError {}
