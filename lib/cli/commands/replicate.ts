// `lazyboot replicate --disk FILE --to URI [--to URI2] [--interval 30s] [--rate 20M]`: serve a
// local disk's copy-on-read export and upload its modified blocks to each target in the
// background (lib/snapshot/replicate.ts), until Ctrl-C; a later `snapshot` then only commits.
import type { Argv, CommandModule } from 'yargs';
import { describePass } from '../../snapshot/replicator.js';
import { replicate, DEFAULT_REPLICATE_INTERVAL_MS, type ReplicationTotals } from '../../snapshot/replicate.js';
import { replicationArgs } from '../replication-args.js';
import { humanSize } from '../human-size.js';
import { s3EndpointOption } from '../s3-endpoint-option.js';
import { cacheOf, cacheOptions, type CacheArgs } from '../cache-options.js';

interface ReplicateArgs extends CacheArgs {
  disk: string;
  to: string[];
  from: string[];
  interval: string;
  rate: string;
  socket?: string;
  export: string;
  's3-endpoint'?: string;
  json: boolean;
}

const log = (line: string): void => void process.stderr.write(`lazyboot: ${line}\n`);

export function totalsLines(totals: readonly ReplicationTotals[]): string[] {
  return totals.map((t) => `${t.target} ${t.uri}: ${t.passes} passes (${t.failedPasses} failed), ${t.sentBlocks} blocks sent (${humanSize(t.blockBytesSent)}, ${humanSize(t.wireBytes)} on the wire), ${t.dedupedBlocks} already there; ${t.dirtyBlocks} marked for the next snapshot, ${t.pendingBlocks} of them not yet uploaded${t.lastError ? `; last error: ${t.lastError}` : ''}`);
}

export const replicateCommand: CommandModule<any, ReplicateArgs> = {
  command: 'replicate',
  describe: 'serve a local disk and upload its modified blocks to repositories in the background (no version is committed: a later `snapshot` only commits); until Ctrl-C',
  builder: (y: Argv) => cacheOptions(y)
    .option('disk', { type: 'string', demandOption: true, describe: 'local disk made by `disk serve` or `boot --disk` (served by this process: not in use elsewhere)' })
    .option('to', { type: 'string', array: true, demandOption: true, describe: 'repository to upload to: a directory, http+unix:///?socket=PATH or http://127.0.0.1:PORT (repeat for several; each keeps its own marks)' })
    .option('from', { type: 'string', array: true, default: [] as string[], describe: 'repository to fetch absent blocks from (repeatable)', defaultDescription: 'the default local repository' })
    .option('interval', { type: 'string', default: `${DEFAULT_REPLICATE_INTERVAL_MS / 1000}s`, describe: 'pause between passes (e.g. 30s, 5m, 500ms)' })
    .option('rate', { type: 'string', default: '0', describe: 'upload limit in bytes per second over all targets (e.g. 20M; 0 = unlimited)' })
    .option('socket', { type: 'string', describe: 'unix socket of the disk\'s NBD export', defaultDescription: 'a fresh temporary path' })
    .option('export', { type: 'string', default: 'disk', describe: 'NBD export name' })
    .option('s3-endpoint', s3EndpointOption)
    .option('json', { type: 'boolean', default: false, describe: 'events as JSON lines on stdout' }) as Argv<any>,
  handler: async (args) => {
    const { intervalMs, rate } = replicationArgs(args.interval, args.rate);
    const controller = new AbortController();
    const stop = (): void => controller.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      const replication = await replicate({
        disk: args.disk, to: args.to, from: args.from, intervalMs, rate, socketPath: args.socket, exportName: args.export,
        cache: cacheOf(args, args.from), s3Endpoint: args['s3-endpoint'], signal: controller.signal, log,
        onPass: (pass) => {
          if (args.json) process.stdout.write(`${JSON.stringify({ event: 'pass', ...pass })}\n`);
          else if (pass.error || pass.checkedBlocks > 0) log(describePass(pass));
        },
      });
      if (args.json) process.stdout.write(`${JSON.stringify({ event: 'serving', uri: replication.uri, image: replication.image, targets: replication.targets })}\n`);
      else {
        process.stdout.write(`serving ${replication.image} on ${args.disk} at ${replication.uri}\n`);
        log(`replicating to ${replication.targets.map((t) => `${t.uri} (${t.label})`).join(', ')} every ${intervalMs / 1000} s${rate > 0 ? `, at most ${humanSize(rate)}/s` : ''}; Ctrl-C stops`);
      }
      const totals = await replication.done;
      if (args.json) process.stdout.write(`${JSON.stringify({ event: 'stopped', totals })}\n`);
      else process.stdout.write(`${['stopped:', ...totalsLines(totals).map((line) => `  ${line}`)].join('\n')}\n`);
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
  },
};
