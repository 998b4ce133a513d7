// Errors of the boot trace: a stored trace that cannot be used (it is then left out, with one log
// line, and the boot goes on without it), and a trace the user named that does not exist.
import { LazybootError } from '../base/errors.js';

/** A trace file that does not match (format version, checksum, length, image version). */
export class TraceRefused extends LazybootError {
  constructor(readonly reason: string) {
    super(`boot trace refused: ${reason}`);
  }
}

/** `image trace show|rm REF` found no stored trace for REF. */
export class UnknownTrace extends LazybootError {
  constructor(ref: string, dir: string) {
    super(`no boot trace of ${ref} in ${dir}`, 'list the stored traces with `lazyboot image trace ls`');
  }
}
