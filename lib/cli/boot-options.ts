// Options and milestone printing shared by `lazyboot boot` and `lazyboot run`. The flags carry no
// defaults of their own: an absent flag leaves the option to launch(), whose defaults live in
// vmm/vm-options.ts (shown in --help from there).
import type { Argv } from 'yargs';
import type { LazyVm, LaunchOptions, VmEvent } from '../launch.js';
import { parseMemoryMiB, VM_DEFAULTS } from '../../vmm/vm-options.js';
import { humanSize } from './human-size.js';
import { ProgressBar } from './progress-bar.js';
import { parseDurationMs, parseSizeBytes } from './units.js';
import { cacheOf, cacheOptions, type CacheArgs } from './cache-options.js';
import { replicationArgs } from './replication-args.js';
import { UsageError } from '../base/errors.js';
import { s3EndpointOption } from './s3-endpoint-option.js';

export interface BootArgs extends CacheArgs {
  image: string;
  disk?: string;
  from?: string[];
  's3-endpoint'?: string;
  memory?: string;
  cpus?: number;
  accel?: 'auto' | 'kvm' | 'tcg';
  console?: boolean;
  'console-log'?: string;
  timeout?: string;
  'qemu-arg'?: string[];
  'fetch-timeout'?: string;
  'fetch-ahead'?: string;
  pivot?: 'live' | 'reboot' | 'none';
  fill?: boolean;
  'fill-rate'?: string;
  'fill-outage'?: string;
  trace?: boolean;
  'trace-dir'?: string;
  'trace-to'?: string;
  'replicate-to'?: string[];
  'replicate-interval'?: string;
  'replicate-rate'?: string;
  'snapshot-on-exit'?: string;
  'snapshot-to'?: string;
}

export function bootOptions<T>(y: Argv<T>): Argv<T & BootArgs> {
  return cacheOptions(y)
    .positional('image', { type: 'string', describe: 'image NAME or NAME@N in the repository', demandOption: true })
    .option('disk', { type: 'string', describe: 'local disk file or device (map beside it); default: a temp disk deleted at the end' })
    .option('from', { type: 'string', array: true, describe: 'repository URI (directory, s3://BUCKET/PREFIX read straight from the store, nbd+unix:///?socket=PATH, nbd://HOST:PORT); repeatable', defaultDescription: 'the embedded default repository' })
    .option('s3-endpoint', s3EndpointOption)
    .option('memory', { type: 'string', describe: 'guest memory (e.g. 1G, 2048M)', defaultDescription: `${VM_DEFAULTS.memoryMiB}M` })
    .option('cpus', { type: 'number', describe: 'guest CPUs', defaultDescription: String(VM_DEFAULTS.cpus) })
    .option('accel', { choices: ['auto', 'kvm', 'tcg'] as const, describe: 'accelerator (auto probes that KVM really runs guests)', defaultDescription: VM_DEFAULTS.accel })
    .option('console', { type: 'boolean', describe: 'show the guest serial console', defaultDescription: String(VM_DEFAULTS.console) })
    .option('console-log', { type: 'string', describe: 'keep the serial console log in this file' })
    .option('timeout', { type: 'string', describe: 'time allowed to boot (e.g. 90s, 5m; 0 = no limit)', defaultDescription: `${VM_DEFAULTS.timeoutMs / 1000}s` })
    .option('qemu-arg', { type: 'string', array: true, describe: 'extra QEMU argument, repeatable (write --qemu-arg=-fw_cfg --qemu-arg=name=…)' })
    // The device's defaults live in lib/fetch and lib/cor; these descriptions only name them.
    .option('fetch-timeout', { type: 'string', describe: 'time allowed per repository request before failing over (e.g. 10s, 500ms)', defaultDescription: '10s' })
    .option('pivot', { choices: ['live', 'reboot', 'none'] as const, describe: 'at storage-ready, move the disk to QEMU\'s native graph (live: the guest pauses for milliseconds; reboot: a native QEMU boots the machine again), or stay on the copy-on-read device (none)' })
    .option('fill', { type: 'boolean', describe: 'after a pivot, fill the rest of the disk with QEMU\'s block-stream (--no-fill: only what the guest reads)', defaultDescription: 'on with --pivot live' })
    .option('fill-rate', { type: 'string', describe: 'fill speed limit in bytes per second (e.g. 20M; 0 = unlimited)', defaultDescription: '0' })
    .option('fill-outage', { type: 'string', describe: 'how long the fill waits for a repository that went away before it stops (e.g. 30s, 10m); a later boot of the same --disk finishes it', defaultDescription: '10m' })
    .option('fetch-ahead', { type: 'string', describe: 'largest window fetched ahead of a sequential guest read (e.g. 8M; 0 = only what the guest reads)', defaultDescription: '8M' })
    .option('trace', { type: 'boolean', describe: 'record the blocks a first boot reads, fetch them ahead of the guest on later boots (--no-trace: neither)', defaultDescription: 'true' })
    .option('trace-dir', { type: 'string', describe: 'where boot traces are kept when the repository cannot be written', defaultDescription: '$XDG_CACHE_HOME/lazyboot/traces' })
    .option('trace-to', { type: 'string', describe: 'store boot traces in this repository: a directory, or the write path of `repo serve` (http+unix:///?socket=PATH, http://127.0.0.1:PORT)', defaultDescription: 'a repository directory given with --from, else the host cache' })
    .option('replicate-to', { type: 'string', array: true, describe: 'upload the guest\'s writes to this repository in the background (directory, http+unix:///?socket=PATH, http://127.0.0.1:PORT; repeatable): a later snapshot only commits' })
    .option('replicate-interval', { type: 'string', describe: 'pause between replication passes (e.g. 30s)', defaultDescription: '30s' })
    .option('replicate-rate', { type: 'string', describe: 'replication upload limit in bytes per second (e.g. 20M; 0 = unlimited)', defaultDescription: '0' })
    .option('snapshot-on-exit', { type: 'string', describe: 'when the VM ends, ship the disk as a new version of this image name (what the guest wrote is kept)' })
    .option('snapshot-to', { type: 'string', describe: 'repository for --snapshot-on-exit (directory, http+unix:///?socket=PATH, http://127.0.0.1:PORT)', defaultDescription: 'the --from directory, else the default repository' }) as unknown as Argv<T & BootArgs>;
}

/**
 * The COR device's diagnostics worth a user's eye: not its NBD connection events (QEMU is its only
 * client, and a guest read that fails is told by the device's own fetch-failure line).
 */
export function deviceLog(say: (line: string) => void): Pick<LaunchOptions, 'log' | 'onConnectionEvent'> {
  return { log: say, onConnectionEvent: () => {} };
}

/** `--replicate-to` and its pace; a pace without a target is a mistake worth a line. */
function replicationOf(args: BootArgs): Pick<LaunchOptions, 'replicate'> {
  const to = args['replicate-to'] ?? [];
  if (to.length === 0) {
    if (args['replicate-interval'] !== undefined || args['replicate-rate'] !== undefined) throw new UsageError('--replicate-interval and --replicate-rate need --replicate-to', 'give --replicate-to URI');
    return {};
  }
  const { intervalMs, rate } = replicationArgs(args['replicate-interval'] ?? '30s', args['replicate-rate'] ?? '0');
  return { replicate: { to, intervalMs, rate } };
}

/** The launch() options the flags ask for: text parsed here, absent flags left to launch()'s defaults. */
export function launchOptionsOf(args: BootArgs): LaunchOptions {
  const given = <T>(value: string | undefined, parse: (text: string) => T): T | undefined => (value === undefined ? undefined : parse(value));
  return {
    image: args.image,
    disk: args.disk,
    from: args.from ?? [],
    s3Endpoint: args['s3-endpoint'],
    memoryMiB: given(args.memory, parseMemoryMiB),
    cpus: args.cpus,
    accel: args.accel,
    console: args.console,
    consoleLog: args['console-log'],
    timeoutMs: given(args.timeout, parseDurationMs),
    qemuArgs: args['qemu-arg'],
    fetchTimeoutMs: given(args['fetch-timeout'], parseDurationMs),
    fetchAheadBytes: given(args['fetch-ahead'], parseSizeBytes),
    cache: cacheOf(args, args.from ?? []),
    pivot: args.pivot,
    fill: args.fill,
    fillRate: given(args['fill-rate'], parseSizeBytes),
    fillOutageMs: given(args['fill-outage'], parseDurationMs),
    trace: args.trace === false ? false : { dir: args['trace-dir'], ...(args['trace-to'] !== undefined ? { to: args['trace-to'] } : {}) },
    ...replicationOf(args),
    ...(args['snapshot-on-exit'] !== undefined ? { snapshotOnExit: { as: args['snapshot-on-exit'], ...(args['snapshot-to'] !== undefined ? { to: args['snapshot-to'] } : {}) } } : {}),
  };
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Prints each milestone as it happens (accelerator, QEMU up, storage-ready with bytes fetched, …). */
export function printMilestones(vm: LazyVm, write: (line: string) => void): void {
  const describe = (event: VmEvent): string | undefined => {
    switch (event.type) {
      case 'accelerator':
        return `accelerator: ${event.reason}`;
      case 'qemu-up':
        return `QEMU up (pid ${event.pid}) at ${seconds(event.atMs)}`;
      case 'storage-ready': {
        const fetched = humanSize(vm.stats().fetchedBytes);
        const where = event.source === 'hook' ? `${event.driver ?? '?'} has ${event.disk ?? '?'} (root ${event.root}; said by the image's lazyboot hook)` : `/ is ${event.root} on a native disk (said by qemu-guest-agent)`;
        return `storage-ready at ${seconds(event.atMs)}: ${where}; fetched ${fetched} so far`;
      }
      case 'guest-event':
        return event.event.event === 'boot-complete' ? `boot-complete at ${seconds(event.atMs)}` : undefined;
      case 'pivot':
        return `pivot to native at ${seconds(event.atMs)}: the guest was paused ${event.pauseMs.toFixed(1)} ms; QEMU's block layer has the disk (the copy-on-read device only reads through for it)`;
      case 'native-boot':
        return `QEMU booted on the native graph at ${seconds(event.atMs)}: its block layer has the disk from the first instruction (the copy-on-read device only reads through for it)`;
      case 'fill-complete':
        return `fill complete at ${seconds(event.atMs)}: the local disk holds the whole image; the copy-on-read device has left the data path`;
      case 'fill-failed':
        return `fill stopped at ${seconds(event.atMs)}: ${event.message}`;
      case 'fill-paused':
        return `fill paused at ${seconds(event.atMs)}: ${event.message}; retrying every few seconds`;
      case 'fill-stalled':
        return `fill stalled for ${seconds(event.stalledMs)}: ${event.message}; the guest runs on what is local, the fill resumes when the repository is back (or boot the same --disk again later to finish it)`;
      case 'fill-resumed':
        return `fill resumed at ${seconds(event.atMs)} after ${seconds(event.pausedMs)}: the repository is back`;
      case 'agent-up':
        return `guest agent up at ${seconds(event.atMs)}`;
      case 'qmp-event':
        return event.event.event === 'BLOCK_IO_ERROR' ? `guest disk I/O error: ${JSON.stringify(event.event.data)}` : undefined;
      default:
        return undefined;
    }
  };
  // The fill's progress is a bar on a terminal only (never in logs or pipes).
  let bar: ProgressBar | undefined;
  const show = (event: VmEvent) => {
    if (event.type === 'fill-progress') {
      bar ??= new ProgressBar('lazyboot: fill', event.len);
      bar.update(event.offset);
      return;
    }
    const line = describe(event);
    if (!line) return;
    bar?.done();
    write(line);
  };
  for (const event of vm.events.history) show(event);
  vm.events.on(show);
}

/** The end-of-boot summary: how it ended, time, and what the disk fetched versus the image. */
export function summaryLines(vm: LazyVm, startedAt: number): string[] {
  const stats = vm.stats();
  const storageReady = vm.events.history.find((e): e is Extract<VmEvent, { type: 'storage-ready' }> => e.type === 'storage-ready');
  const pivot = vm.events.history.find((e): e is Extract<VmEvent, { type: 'pivot' }> => e.type === 'pivot');
  const nativeBoot = vm.events.history.find((e) => e.type === 'native-boot');
  const fillEnd = vm.events.history.find((e) => e.type === 'fill-complete' || e.type === 'fill-failed');
  const lastProgress = vm.events.history.filter((e): e is Extract<VmEvent, { type: 'fill-progress' }> => e.type === 'fill-progress').pop();
  // Progress is polled once a second: a fill stopped sooner has none, but it did start.
  const fillStarted = vm.status().fill !== 'none';
  const fill = fillEnd?.type === 'fill-complete' ? `complete at ${seconds(fillEnd.atMs)}`
    : lastProgress ? `stopped at ${humanSize(lastProgress.offset)} of ${humanSize(lastProgress.len)}`
      : fillStarted ? 'stopped before its first progress report' : 'none';
  // After a pivot the map was folded from QEMU's allocation and writes bitmap at the end.
  const present = vm.folded?.presentBlocks ?? stats.presentBlocks;
  const modified = vm.folded?.modifiedBlocks ?? stats.modifiedBlocks;
  return [
    `summary: ${vm.image} ${vm.state}${vm.failure ? ` (${vm.failure.message})` : ''} after ${seconds(Date.now() - startedAt)}`,
    `  storage-ready: ${storageReady ? `${seconds(storageReady.atMs)} (from the ${storageReady.source === 'hook' ? 'image\'s hook' : 'guest agent'})` : 'never'}`,
    `  pivot: ${pivot ? `live at ${seconds(pivot.atMs)}, guest paused ${pivot.pauseMs.toFixed(1)} ms; fill (QEMU block-stream): ${fill}` : nativeBoot ? `native boot (QEMU started on the native graph); fill (QEMU block-stream): ${fill}` : 'none'}`,
    `  fetched: ${humanSize(stats.fetchedBytes)} of a ${humanSize(vm.imageBytes)} image, in ${stats.fetchedBlocks} blocks (${stats.failedFetches} failed fetches, ${stats.readRequests} guest reads)`,
    `  the guest needed ${humanSize(stats.demandedBytes)}; fetched ahead ${humanSize(stats.aheadFetchedBytes)}, of it read ${humanSize(stats.aheadReadBytes)}`,
    ...traceLines(stats),
    `  disk ${vm.diskPath}: ${present}/${stats.totalBlocks} blocks present, ${modified} modified`,
  ];
}

/** The boot trace's part of the summary: what the replay fetched and the guest used, what was recorded. */
function traceLines(stats: ReturnType<LazyVm['stats']>): string[] {
  const lines: string[] = [];
  if (stats.traceBlocks > 0) {
    const share = stats.replayFetchedBytes > 0 ? ` (${Math.round((100 * stats.replayReadBytes) / stats.replayFetchedBytes)}%)` : '';
    lines.push(`  boot trace: replayed ${humanSize(stats.replayFetchedBytes)} in ${stats.replayRequests} requests ahead of the guest, which read ${humanSize(stats.replayReadBytes)} of it${share}`);
  }
  if (stats.recordedBlocks > 0) lines.push(`  boot trace: recorded ${stats.recordedBlocks} blocks`);
  return lines;
}
