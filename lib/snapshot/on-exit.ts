// Where `boot`/`run --snapshot-on-exit NAME` ships the disk when no `--snapshot-to` is given: the
// repository the image came from when that is a directory (a served repository's NBD URI is
// read-only: its write path is another URI), or the default local repository.
import { LazybootError, UsageError } from '../base/errors.js';
import { Repository } from '../repo/repository.js';

export interface ExitSnapshot {
  /** Image name of the new version. */
  readonly as: string;
  /** Write URI (a directory, http+unix:///?socket=…, http://…); default: see exitSnapshotTarget. */
  readonly to?: string;
}

export function exitSnapshotTarget(exit: ExitSnapshot, from: readonly string[]): string {
  if (exit.to !== undefined) return exit.to;
  if (from.length === 0) return Repository.defaultDir();
  const first = from[0]!;
  if (!/^[a-z][a-z0-9+.-]*:/i.test(first) || first.startsWith('file:')) return first;
  throw new UsageError(`--snapshot-on-exit ${exit.as}: the image comes from ${first}, which takes no writes`, 'give --snapshot-to with the repository\'s write URI (`repo serve --write-socket` prints it) or a directory');
}

/** The VM ended but its disk could not be closed cleanly, so no snapshot was taken on exit. */
export class SnapshotNotTaken extends LazybootError {
  constructor(disk: string) {
    super(`no snapshot was taken of ${disk}: the disk did not close cleanly (see the lines above)`, 'boot with --disk FILE to keep the disk, then `lazyboot snapshot --disk FILE`');
  }
}
