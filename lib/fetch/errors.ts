// Typed errors of the fetcher: unreachable repositories, corrupt blocks from a repository.
import { BlockError } from '../block/backend.js';
import { LazybootError } from '../base/errors.js';

/** Why one repository could not give the manifest: its URI and the error it failed with. */
export interface RepositoryFailure {
  readonly uri: string;
  readonly error: Error;
}

/** No repository URI answered when the device opened; `causes` holds each one's own error. */
export class RepositoryUnreachable extends LazybootError {
  /** The URIs tried, in order. */
  readonly uris: readonly string[];

  constructor(readonly causes: readonly RepositoryFailure[]) {
    super(`no repository reachable (${causes.map(({ uri, error }) => `${uri}: ${error.message.replace(/\s*\n\s*/g, ' ')}`).join('; ')})`,
      'start `lazyboot repo serve` or pass a working --from URI');
    this.uris = causes.map((failure) => failure.uri);
  }
}

/** A block from one repository does not hash to the manifest's digest: never stored locally. */
export class DigestMismatch extends BlockError {
  constructor(readonly source: string, readonly block: number) {
    super('EIO', `block ${block} from ${source} does not match its SHA-256 digest`);
    this.name = 'DigestMismatch';
  }
}

/** A repository did not answer within the request timeout. */
export class FetchTimeout extends BlockError {
  constructor(readonly source: string, readonly block: number, timeoutMs: number) {
    super('EIO', `${source} did not answer for block ${block} within ${timeoutMs} ms`);
    this.name = 'FetchTimeout';
  }
}

/** The worker itself failed (not the repository): the read is retried in-process. */
export class FetchWorkerFailed extends BlockError {
  constructor(detail: string, options?: ErrorOptions) {
    super('EIO', `fetch worker failed: ${detail}`, options);
    this.name = 'FetchWorkerFailed';
  }
}
