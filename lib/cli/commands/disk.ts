// `lazyboot disk serve|fill|status`: the copy-on-read disk from the command line.
import type { Argv, CommandModule } from 'yargs';
import { access } from 'node:fs/promises';
import { openCorDevice, openDisk, mapPathOf, statsOf } from '../../cor/device.js';
import { Filler, type FillProgress } from '../../cor/fill.js';
import { BlockMap } from '../../map/block-map.js';
import type { Bitset } from '../../map/bitset.js';
import { UsageError, LazybootError } from '../../base/errors.js';
import { BlockError } from '../../block/backend.js';
import { DiskIoFailed, FillFailed } from '../../cor/errors.js';
import { isSystemError } from '../../base/system-error.js';
import { ProgressBar } from '../progress-bar.js';
import { humanSize } from '../human-size.js';
import { commandGroup } from '../command-output.js';
import { serverLimitOptions, serverLimitsOf, type ServerLimitArgs } from '../server-limits.js';
import { withTlsCredentials } from '../../nbd/client-uri.js';
import { COR_SERVER_LIMITS } from '../../cor/device.js';
import { cacheOf, cacheOptions, type CacheArgs } from '../cache-options.js';
import { s3EndpointOption } from '../s3-endpoint-option.js';

const log = (line: string): void => void process.stderr.write(`${new Date().toISOString()} ${line}\n`);

/** "50M", "1.5G", "800K", "0" → bytes per second. */
export function parseRate(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?(\/s)?$/i.exec(text.trim());
  if (!match) throw new UsageError(`invalid rate ${JSON.stringify(text)}`, 'use bytes per second like 50M, 800K or 0 for unlimited');
  const power = ' KMGT'.indexOf((match[2] || ' ').toUpperCase());
  return Math.round(Number(match[1]) * 1024 ** power);
}

class MissingMap extends LazybootError {
  constructor(disk: string) {
    super(`${disk} has no map (${mapPathOf(disk)})`, 'create it with `lazyboot disk serve IMAGE --disk FILE`, or pass --image');
  }
}

function progressReporter(json: boolean, blockSize: number): (progress: FillProgress) => void {
  let bar: ProgressBar | undefined;
  let lastJson = 0;
  return (progress) => {
    if (json) {
      const now = Date.now();
      if (!progress.done && now - lastJson < 1000) return;
      lastJson = now;
      process.stdout.write(`${JSON.stringify({ event: progress.done ? 'fill-done' : 'fill-progress', ...progress })}\n`);
      return;
    }
    bar ??= new ProgressBar('fill', progress.totalBlocks * blockSize);
    bar.update(progress.presentBlocks * blockSize);
    if (progress.done) bar.done();
  };
}

interface DiskArgs extends CacheArgs { disk: string; from: string[]; 's3-endpoint'?: string; json: boolean }
interface ServeArgs extends DiskArgs, ServerLimitArgs { image: string; socket?: string; fill: boolean; 'fill-rate': string; export: string; 'tls-creds'?: string }
interface FillArgs extends DiskArgs { image?: string; rate: string; 'tls-creds'?: string }

const fromOption = { type: 'string', array: true, default: [] as string[], describe: 'repository URI: directory, s3://BUCKET/PREFIX (read straight from the store), nbd+unix:///?socket=PATH, nbd://HOST:PORT, or nbds://… with TLS (repeat for several)', defaultDescription: 'the default local repository' } as const;
const tlsCredsOption = { type: 'string', describe: 'x509 directory for nbds:// repositories: ca-cert.pem (and client-cert.pem, client-key.pem)' } as const;

/** The --from URIs, with --tls-creds added to nbds:// ones that name no credentials. */
function fromUris(args: { from: string[]; 'tls-creds'?: string }): string[] {
  const creds = args['tls-creds'];
  return args.from.map((uri) => withTlsCredentials(uri, creds ? { x509Dir: creds } : undefined));
}

/**
 * The disk commands' errors as one line: a file system error names its file, a failed fill says
 * which block, which repository and what to do (BlockError is the block layer's error, not a
 * LazybootError: it carries an errno for NBD clients, not a hint for a person).
 */
function oneLine(error: unknown, context: { disk: string; image?: string }): unknown {
  // A BlockError is a LazybootError too, but a failed fill needs its own line (which block, why).
  if (error instanceof BlockError) return new FillFailed(context.disk, context.image ?? 'the image', error);
  if (error instanceof LazybootError) return error;
  if (isSystemError(error)) return new DiskIoFailed(error);
  return error;
}

async function withDiskErrors<T>(context: { disk: string; image?: string }, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw oneLine(error, context);
  }
}

async function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}

const serveCommand: CommandModule<any, ServeArgs> = {
  command: 'serve <image>',
  describe: 'serve IMAGE as a copy-on-read disk over NBD (creates the disk and its map on first use)',
  builder: (y: Argv) => serverLimitOptions(cacheOptions(y)
    .positional('image', { type: 'string', describe: 'NAME or NAME@N' })
    .option('disk', { type: 'string', demandOption: true, describe: 'local raw file or block device' })
    .option('from', fromOption)
    .option('s3-endpoint', s3EndpointOption)
    .option('tls-creds', tlsCredsOption)
    .option('socket', { type: 'string', describe: 'unix socket to serve on', defaultDescription: 'a fresh temporary path' })
    .option('export', { type: 'string', default: 'disk', describe: 'NBD export name' })
    .option('fill', { type: 'boolean', default: false, describe: 'fetch every absent block in the background' })
    .option('fill-rate', { type: 'string', default: '0', describe: 'background fill limit in bytes/s (50M, 0 = unlimited)' })
    .option('json', { type: 'boolean', default: false, describe: 'progress as JSON lines on stdout' }),
  { idleTimeoutS: (COR_SERVER_LIMITS.idleTimeoutMs ?? 0) / 1000, maxConnections: COR_SERVER_LIMITS.maxConnections ?? 16, stallTimeoutS: (COR_SERVER_LIMITS.stallTimeoutMs ?? 600_000) / 1000 }) as Argv<any>,
  handler: (args) => withDiskErrors({ disk: args.disk, image: args.image }, async () => {
    let report: ((progress: FillProgress) => void) | undefined;
    const device = await openCorDevice({
      image: args.image, disk: args.disk, from: fromUris(args), s3Endpoint: args['s3-endpoint'], socketPath: args.socket, exportName: args.export,
      fill: args.fill, fillRate: parseRate(args['fill-rate']), log, serverLimits: serverLimitsOf(args), cache: cacheOf(args, args.from),
      onFillProgress: (progress) => report?.(progress),
    });
    report = progressReporter(args.json, device.manifest.blockSize);
    if (args.json) process.stdout.write(`${JSON.stringify({ event: 'serving', uri: device.uri, image: `${device.manifest.name}@${device.manifest.version}` })}\n`);
    else process.stdout.write(`serving ${device.manifest.name}@${device.manifest.version} on ${args.disk} at ${device.uri}\n`);
    if (device.filled) {
      void device.filled.then(() => {
        const stats = device.stats();
        if (!args.json) log(`fill done: ${stats.presentBlocks}/${stats.totalBlocks} blocks present, ${humanSize(stats.fetchedBytes)} fetched`);
      }, () => undefined);
    }
    const signal = await untilSignal();
    const stats = device.stats();
    log(`${signal}: flushing and stopping; ${stats.presentBlocks}/${stats.totalBlocks} present, ${stats.fetchedBlocks} blocks fetched in ${stats.fetchRequests} requests, ${stats.failedFetches} failed`
      + `; fetched ahead ${humanSize(stats.aheadFetchedBytes)}, of it read ${humanSize(stats.aheadReadBytes)}; reads waited on fetches ${(stats.guestWaitedMs / 1000).toFixed(2)} s`);
    await device.close();
  }),
};

const fillCommand: CommandModule<any, FillArgs> = {
  command: 'fill',
  describe: 'fetch every absent block of a disk (no server); resumable',
  builder: (y: Argv) => cacheOptions(y)
    .option('disk', { type: 'string', demandOption: true, describe: 'local raw file or block device' })
    .option('image', { type: 'string', describe: 'NAME@N, needed only when the disk has no map yet' })
    .option('from', fromOption)
    .option('s3-endpoint', s3EndpointOption)
    .option('tls-creds', tlsCredsOption)
    .option('rate', { type: 'string', default: '0', describe: 'limit in bytes/s (50M, 0 = unlimited)' })
    .option('json', { type: 'boolean', default: false, describe: 'progress as JSON lines on stdout' }) as Argv<any>,
  handler: (args) => {
    const context = { disk: args.disk, image: args.image };
    return withDiskErrors(context, () => fill(args, context));
  },
};

async function fill(args: FillArgs, context: { image?: string }): Promise<void> {
  const rate = parseRate(args.rate); // before anything is opened or created
  let image = args.image;
  if (!image) {
    if (!(await access(mapPathOf(args.disk)).then(() => true, () => false))) throw new MissingMap(args.disk);
    const map = await BlockMap.open(mapPathOf(args.disk), async () => {});
    image = map.header.image;
    await map.close();
  }
  context.image = image;
  const opened = await openDisk({ image, disk: args.disk, from: fromUris(args), s3Endpoint: args['s3-endpoint'], log, cache: cacheOf(args, args.from) });
  context.image = `${opened.backend.manifest.name}@${opened.backend.manifest.version}`;
  const filler = new Filler(opened.backend, {
    rate, stopOnError: true, log,
    onProgress: progressReporter(args.json, opened.backend.manifest.blockSize),
  });
  const onSignal = () => filler.stop();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await filler.run();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await opened.close();
  }
  const stats = statsOf(opened.backend);
  if (!args.json) process.stdout.write(`${args.disk}: ${stats.presentBlocks}/${stats.totalBlocks} blocks present, ${humanSize(stats.fetchedBytes)} fetched\n`);
}

/** Blocks the next snapshot to `target` sends: its marks in the map united with the in-flight set (as remarkModified merges them). */
function pendingAfterMerge(map: BlockMap, target: string, inFlight: Bitset): number {
  const index = map.header.targets.indexOf(target);
  if (index < 0) return inFlight.count();
  const union = map.modified[index]!.copy();
  union.orWith(inFlight);
  return union.count();
}

const statusCommand: CommandModule<any, DiskArgs> = {
  command: 'status',
  describe: 'image and blocks present / modified / total of a disk',
  builder: (y: Argv) => y
    .option('disk', { type: 'string', demandOption: true, describe: 'local raw file or block device' })
    .option('json', { type: 'boolean', default: false, describe: 'one JSON object on stdout' }) as Argv<any>,
  handler: (args) => withDiskErrors({ disk: args.disk }, async () => {
    if (!(await access(mapPathOf(args.disk)).then(() => true, () => false))) throw new MissingMap(args.disk);
    const map = await BlockMap.open(mapPathOf(args.disk), async () => {});
    const counts = map.counts();
    // Marks of an interrupted snapshot wait in the in-flight set until the next snapshot merges them back.
    const { readSendingSet, sendingSetPath } = await import('../../snapshot/sending-set.js');
    const inFlight = await readSendingSet(sendingSetPath(mapPathOf(args.disk))).catch(() => undefined);
    // A block may be both in flight and marked again since (written meanwhile): count it once.
    const pendingBlocks = inFlight ? pendingAfterMerge(map, inFlight.target, inFlight.blocks) : undefined;
    await map.close();
    const { header } = map;
    // The map alone cannot serve: say so here rather than at the next serve.
    const diskMissing = !(await access(args.disk).then(() => true, () => false));
    const status = {
      disk: args.disk, diskMissing, image: header.image, manifestDigest: header.manifestDigest, size: header.size, blockSize: header.blockSize,
      presentBlocks: counts.present, totalBlocks: counts.total,
      modifiedBlocks: Object.fromEntries(header.targets.map((target, i) => [target, counts.modified[i]])),
      ...(header.shipping ? { targets: Object.fromEntries(Object.entries(header.shipping).map(([target, state]) => [target, { uri: state.uri, baseline: state.baseline?.ref }])) } : {}),
      ...(inFlight ? { inFlight: { target: inFlight.target, blocks: inFlight.blocks.count(), pendingBlocks } } : {}),
      complete: counts.present === counts.total,
    };
    if (args.json) {
      process.stdout.write(`${JSON.stringify(status)}\n`);
      return;
    }
    const percent = counts.total ? ((counts.present / counts.total) * 100).toFixed(1) : '100.0';
    process.stdout.write(`${args.disk}: ${header.image} (${humanSize(header.size)}, ${humanSize(header.blockSize)} blocks)\n`
      + `  present:  ${counts.present} / ${counts.total} blocks (${percent}%)\n`
      + header.targets.map((target, i) => {
        const state = header.shipping?.[target];
        const where = state ? `${target}: ${state.uri}${state.baseline ? `, last ${state.baseline.ref}` : ''}` : target;
        return `  modified: ${counts.modified[i]} blocks (not yet shipped to ${where})\n`;
      }).join('')
      + (inFlight ? `  in flight: ${inFlight.blocks.count()} blocks of an interrupted snapshot to ${inFlight.target} (marked again at the next snapshot, ${pendingBlocks} to send in all)\n` : '')
      + (diskMissing ? `  disk:     missing: serve and fill refuse this map; put the disk back, or delete ${mapPathOf(args.disk)} to start over\n` : ''));
  }),
};

export const diskCommand = commandGroup({
  name: 'disk',
  describe: 'a local copy-on-read disk of an image: serve it, fill it, show its state',
  subcommands: [serveCommand, fillCommand, statusCommand],
});
