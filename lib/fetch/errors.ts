// Typed errors of the fetcher: unreachable repositories, corrupt blocks from a repository.
import { BlockError } from '../block/backend.js';
import { LazybootError } from '../base/errors.js';

/** No repository URI answered when the device opened. */
export class RepositoryUnreachable extends LazybootError {
  constructor(readonly uris: readonly string[], details: readonly string[]) {
    super(`no repository reachable (${uris.map((uri, i) => `${uri}: ${details[i] ?? 'failed'}`).join('; ')})`,
      'start `lazyboot repo serve` or pass a working --from URI');
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
