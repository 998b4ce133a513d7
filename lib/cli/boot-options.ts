// Options and milestone printing shared by `lazyboot boot` and `lazyboot run`. The flags carry no
// defaults of their own: an absent flag leaves the option to launch(), whose defaults live in
// vmm/vm-options.ts (shown in --help from there).
import type { Argv } from 'yargs';
import type { LazyVm, LaunchOptions, VmEvent } from '../launch.js';
import { parseMemoryMiB, VM_DEFAULTS } from '../../vmm/vm-options.js';
import { humanSize } from './human-size.js';
import { parseDurationMs, parseSizeBytes } from './units.js';
import { cacheOf, cacheOptions, type CacheArgs } from './cache-options.js';

export interface BootArgs extends CacheArgs {
  image: string;
  disk?: string;
  from?: string[];
  memory?: string;
  cpus?: number;
  accel?: 'auto' | 'kvm' | 'tcg';
  console?: boolean;
  'console-log'?: string;
  timeout?: string;
  'qemu-arg'?: string[];
  'fetch-timeout'?: string;
  'fetch-ahead'?: string;
}

export function bootOptions<T>(y: Argv<T>): Argv<T & BootArgs> {
  return cacheOptions(y)
    .positional('image', { type: 'string', describe: 'image NAME or NAME@N in the repository', demandOption: true })
    .option('disk', { type: 'string', describe: 'local disk file or device (map beside it); default: a temp disk deleted at the end' })
    .option('from', { type: 'string', array: true, describe: 'repository URI (directory, nbd+unix:///?socket=PATH, nbd://HOST:PORT); repeatable', defaultDescription: 'the embedded default repository' })
    .option('memory', { type: 'string', describe: 'guest memory (e.g. 1G, 2048M)', defaultDescription: `${VM_DEFAULTS.memoryMiB}M` })
    .option('cpus', { type: 'number', describe: 'guest CPUs', defaultDescription: String(VM_DEFAULTS.cpus) })
    .option('accel', { choices: ['auto', 'kvm', 'tcg'] as const, describe: 'accelerator (auto probes that KVM really runs guests)', defaultDescription: VM_DEFAULTS.accel })
    .option('console', { type: 'boolean', describe: 'show the guest serial console', defaultDescription: String(VM_DEFAULTS.console) })
    .option('console-log', { type: 'string', describe: 'keep the serial console log in this file' })
    .option('timeout', { type: 'string', describe: 'time allowed to boot (e.g. 90s, 5m; 0 = no limit)', defaultDescription: `${VM_DEFAULTS.timeoutMs / 1000}s` })
    .option('qemu-arg', { type: 'string', array: true, describe: 'extra QEMU argument, repeatable (write --qemu-arg=-fw_cfg --qemu-arg=name=…)' })
    // The device's defaults live in lib/fetch and lib/cor; these descriptions only name them.
    .option('fetch-timeout', { type: 'string', describe: 'time allowed per repository request before failing over (e.g. 10s, 500ms)', defaultDescription: '10s' })
    .option('fetch-ahead', { type: 'string', describe: 'largest window fetched ahead of a sequential guest read (e.g. 8M; 0 = only what the guest reads)', defaultDescription: '8M' }) as unknown as Argv<T & BootArgs>;
}

/** The COR device's diagnostics worth a user's eye (not its per-connection chatter). */
export function corLog(say: (line: string) => void): (line: string) => void {
  return (line) => {
    if (!line.startsWith('connection ')) say(line);
  };
}

/** The launch() options the flags ask for: text parsed here, absent flags left to launch()'s defaults. */
export function launchOptionsOf(args: BootArgs): LaunchOptions {
  const given = <T>(value: string | undefined, parse: (text: string) => T): T | undefined => (value === undefined ? undefined : parse(value));
  return {
    image: args.image,
    disk: args.disk,
    from: args.from ?? [],
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
      case 'guest-event': {
        const { event: name, disk, driver, root } = event.event as Record<string, string>;
        if (name === 'storage-ready') {
          const stats = vm.stats();
          return `storage-ready at ${seconds(event.atMs)}: ${driver ?? '?'} has ${disk ?? '?'} (root ${root ?? '?'}); fetched ${humanSize(stats.fetchedBytes)} so far`;
        }
        return name === 'boot-complete' ? `boot-complete at ${seconds(event.atMs)}` : undefined;
      }
      case 'agent-up':
        return `guest agent up at ${seconds(event.atMs)}`;
      case 'qmp-event':
        return event.event.event === 'BLOCK_IO_ERROR' ? `guest disk I/O error: ${JSON.stringify(event.event.data)}` : undefined;
      default:
        return undefined;
    }
  };
  for (const event of vm.events.history) {
    const line = describe(event);
    if (line) write(line);
  }
  vm.events.on((event) => {
    const line = describe(event);
    if (line) write(line);
  });
}

/** The end-of-boot summary: how it ended, time, and what the disk fetched versus the image. */
export function summaryLines(vm: LazyVm, startedAt: number): string[] {
  const stats = vm.stats();
  const storageReady = vm.events.history.find((e): e is Extract<VmEvent, { type: 'guest-event' }> => e.type === 'guest-event' && e.event.event === 'storage-ready');
  return [
    `summary: ${vm.image} ${vm.state}${vm.failure ? ` (${vm.failure.message})` : ''} after ${seconds(Date.now() - startedAt)}`,
    `  storage-ready: ${storageReady ? seconds(storageReady.atMs) : 'never'}`,
    `  fetched: ${humanSize(stats.fetchedBytes)} of a ${humanSize(vm.imageBytes)} image, in ${stats.fetchedBlocks} blocks (${stats.failedFetches} failed fetches, ${stats.readRequests} guest reads)`,
    `  the guest needed ${humanSize(stats.demandedBytes)}; fetched ahead ${humanSize(stats.aheadFetchedBytes)}, of it read ${humanSize(stats.aheadReadBytes)}`,
    `  disk ${vm.diskPath}: ${stats.presentBlocks}/${stats.totalBlocks} blocks present, ${stats.modifiedBlocks} modified`,
  ];
}
