// `lazyboot snapshot --disk FILE --to URI --as NAME`: ship a local disk's modified blocks to a
// repository as a new image version (lib/snapshot/snapshot.ts), with progress and a summary.
// `lazyboot snapshot NAME --as IMAGE`: the same for the disk of the running VM NAME, through its
// control socket: a point-in-time snapshot with the guest frozen for milliseconds (live-snapshot.ts;
// after a pivot native-snapshot.ts).
import type { Argv, CommandModule } from 'yargs';
import { UsageError } from '../../base/errors.js';
import { callVm } from '../../control/client.js';
import { snapshot, type SnapshotResult } from '../../snapshot/snapshot.js';
import type { LiveSnapshotResult } from '../../snapshot/live-snapshot.js';
import { ProgressBar } from '../progress-bar.js';
import { humanSize } from '../human-size.js';
import { s3EndpointOption } from '../s3-endpoint-option.js';

interface SnapshotArgs {
  name?: string;
  disk?: string;
  to?: string;
  freeze?: boolean;
  as: string;
  full: boolean;
  's3-endpoint'?: string;
  json: boolean;
}

const log = (line: string): void => void process.stderr.write(`lazyboot: ${line}\n`);

export function summaryOf(result: SnapshotResult): string {
  const blockSize = result.blockSize;
  const wire = result.wireBytesSent + result.wireBytesReceived;
  return [
    `${result.ref}${result.existing ? ' (committed by an earlier, interrupted run)' : ''}${result.parent ? ` from ${result.parent}` : ''} at ${result.uri}`,
    `  blocks:  ${result.dirtyBlocks} dirty: ${result.sentBlocks} sent, ${result.dedupedBlocks} deduplicated, ${result.zeroBlocks} zero, ${result.absentBlocks} unchanged (never local)`,
    `  data:    ${humanSize(result.blockBytesSent)} of blocks sent (dirty: ${humanSize(result.dirtyBlocks * blockSize)})`,
    wire > 0 ? `  wire:    ${humanSize(wire)} (${humanSize(result.overheadBytes)} protocol overhead)` : '  wire:    none (repository directory)',
    `  time:    ${result.seconds.toFixed(2)} s`,
  ].join('\n');
}

/** The instant of a live snapshot, for a person. */
export function instantOf(result: LiveSnapshotResult): string {
  const held = `writes held ${result.writesHeldMs.toFixed(1)} ms`;
  const froze = result.consistency === 'frozen'
    ? `guest frozen ${result.frozenMs.toFixed(1)} ms (${result.frozenFilesystems} file systems; the freeze took ${result.freezeMs.toFixed(0)} ms), ${held}`
    : `crash-consistent (no guest agent froze the file systems), ${held}`;
  // After a pivot the instant is QEMU's transaction, and QEMU's copy-before-write filter does the copies.
  if (result.graph === 'native') return `  instant: ${froze.replace('writes held', 'QEMU transaction')}; ${result.copiedBeforeWrite} blocks copied by QEMU before the guest rewrote them (native graph)`;
  return `  instant: ${froze}; ${result.copiedBeforeWrite} blocks copied before the guest rewrote them`;
}

export const snapshotCommand: CommandModule<any, SnapshotArgs> = {
  command: 'snapshot [name]',
  describe: 'ship the blocks of a local disk (--disk) or of a running VM (NAME) modified since its last snapshot to a repository, as a new image version',
  builder: (y: Argv) => y
    .positional('name', { type: 'string', describe: 'a running VM (see `lazyboot ps`): a point-in-time snapshot of its disk, the guest frozen for milliseconds' })
    .option('disk', { type: 'string', describe: 'local disk made by `disk serve` or `boot --disk` (not in use)' })
    .option('to', { type: 'string', describe: 'repository: a directory, http+unix:///?socket=PATH or http://127.0.0.1:PORT (`repo serve --write-socket/--write-listen`)', defaultDescription: 'with NAME: the repository the image came from when a directory, else the default one; with --disk: required' })
    .option('freeze', { type: 'boolean', describe: 'with NAME: freeze the guest\'s file systems through its agent for the instant (--no-freeze: crash-consistent)', defaultDescription: 'when the VM has an agent' })
    .option('as', { type: 'string', demandOption: true, describe: 'image name of the new version (NAME; the version number is the next free one)' })
    .option('full', { type: 'boolean', default: false, describe: 'hash every local block, not only the marked ones (when the marks are in doubt); only what the repository lacks is sent' })
    .option('s3-endpoint', s3EndpointOption)
    .option('json', { type: 'boolean', default: false, describe: 'the summary as one JSON object on stdout' }) as Argv<any>,
  handler: async (args) => {
    if (args.name !== undefined) return liveSnapshotOf(args.name, args);
    if (args.disk === undefined) throw new UsageError('snapshot needs a running VM\'s NAME or --disk FILE', 'see `lazyboot ps` for running VMs; `lazyboot snapshot --help`');
    if (args.to === undefined) throw new UsageError('snapshot --disk needs --to URI', 'give the repository to write to (a directory, or the write URI `repo serve --write-socket` prints)');
    if (args.freeze !== undefined) throw new UsageError('--freeze and --no-freeze are for a running VM (NAME), not --disk', 'a disk not in use has nothing to freeze');
    const disk = args.disk;
    const to = args.to;
    const controller = new AbortController();
    const stop = (): void => controller.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    let bar: ProgressBar | undefined;
    try {
      const result = await snapshot({
        disk, to, as: args.as, full: args.full, s3Endpoint: args['s3-endpoint'], signal: controller.signal, log,
        onProgress: (progress) => {
          bar ??= new ProgressBar(`snapshot ${args.as}`, progress.dirtyBlocks * progress.blockSize);
          bar.update(progress.doneBlocks * progress.blockSize);
        },
      });
      bar?.done();
      process.stdout.write(args.json ? `${JSON.stringify(result)}\n` : `${summaryOf(result)}\n`);
    } finally {
      bar?.done();
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
  },
};

async function liveSnapshotOf(name: string, args: SnapshotArgs): Promise<void> {
  if (args.disk !== undefined) throw new UsageError(`give a running VM's NAME (${name}) or --disk, not both`);
  if (args['s3-endpoint'] !== undefined) throw new UsageError('--s3-endpoint is for --disk', 'a running VM writes to s3:// with the endpoint it was booted with (boot --s3-endpoint)');
  if (args.full) throw new UsageError('--full is for --disk', 'a running VM ships its marked blocks; stop it and snapshot --disk FILE --full when the marks are in doubt');
  // A snapshot takes as long as its transfer: no reply timeout.
  const result = await callVm<LiveSnapshotResult>(name, 'snapshot', { as: args.as, ...(args.to !== undefined ? { to: args.to } : {}), ...(args.freeze !== undefined ? { freeze: args.freeze } : {}) });
  process.stdout.write(args.json ? `${JSON.stringify(result)}\n` : `${summaryOf(result)}\n${instantOf(result)}\n`);
}
