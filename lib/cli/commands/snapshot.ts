// `lazyboot snapshot --disk FILE --to URI --as NAME`: ship a local disk's modified blocks to a
// repository as a new image version (lib/snapshot/snapshot.ts), with progress and a summary.
import type { Argv, CommandModule } from 'yargs';
import { snapshot, type SnapshotResult } from '../../snapshot/snapshot.js';
import { ProgressBar } from '../progress-bar.js';
import { humanSize } from '../human-size.js';

interface SnapshotArgs {
  disk: string;
  to: string;
  as: string;
  full: boolean;
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

export const snapshotCommand: CommandModule<any, SnapshotArgs> = {
  command: 'snapshot',
  describe: 'ship the blocks of a local disk modified since its last snapshot to a repository, as a new image version',
  builder: (y: Argv) => y
    .option('disk', { type: 'string', demandOption: true, describe: 'local disk made by `disk serve` or `boot --disk` (not in use)' })
    .option('to', { type: 'string', demandOption: true, describe: 'repository: a directory, http+unix:///?socket=PATH or http://127.0.0.1:PORT (`repo serve --write-socket/--write-listen`)' })
    .option('as', { type: 'string', demandOption: true, describe: 'image name of the new version (NAME; the version number is the next free one)' })
    .option('full', { type: 'boolean', default: false, describe: 'hash every local block, not only the marked ones (when the marks are in doubt); only what the repository lacks is sent' })
    .option('json', { type: 'boolean', default: false, describe: 'the summary as one JSON object on stdout' }) as Argv<any>,
  handler: async (args) => {
    const controller = new AbortController();
    const stop = (): void => controller.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    let bar: ProgressBar | undefined;
    try {
      const result = await snapshot({
        disk: args.disk, to: args.to, as: args.as, full: args.full, signal: controller.signal, log,
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
