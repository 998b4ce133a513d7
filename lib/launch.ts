// The harness API: `launch({ image })` boots an image from a repository inside QEMU on a
// copy-on-read disk and returns a VM to wait on, run commands in, and close (or `await using`).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openCorDevice, type CorDevice, type CorStats } from './cor/device.js';
import { UsageError } from './errors.js';
import type { AccelRequest } from '../vmm/accel.js';
import { TransientVm, type ExecResult, type VmEvent } from '../vmm/vm.js';
import type { EventStream } from '../vmm/event-stream.js';
import type { VmState } from '../vmm/lifecycle.js';

export type { VmEvent, ExecResult } from '../vmm/vm.js';
export type { VmState } from '../vmm/lifecycle.js';

export interface LaunchOptions {
  /** `name` or `name@N` in the repository. */
  readonly image: string;
  /** Local disk (raw file or block device; created sparse if missing, map beside it). Default: a temp disk removed at close. */
  readonly disk?: string;
  /** Repository URIs (directory, nbd+unix:///?socket=…, nbd://…); none = the embedded default repository. */
  readonly from?: readonly string[];
  /** Guest memory: MiB as a number, or a size like "512M", "1G". Default 512M. */
  readonly memory?: number | string;
  readonly cpus?: number;
  readonly accel?: AccelRequest;
  /** Show the serial console on stdout. */
  readonly console?: boolean;
  /** Keep the serial console here (default: inside the VM's run dir, removed at close). */
  readonly consoleLog?: string;
  /** Time allowed from start to `ready`. Default 300 s. */
  readonly timeoutMs?: number;
  /**
   * true: `ready` waits for qemu-guest-agent (needed for exec). 'optional': use the agent if the
   * guest has one, `ready` at boot-complete. false (default): no agent.
   */
  readonly agent?: boolean | 'optional';
  /** Fill the rest of the disk in the background while the VM runs. */
  readonly fill?: boolean;
  readonly fillRate?: number;
  /** Extra QEMU arguments (e.g. fw_cfg entries). */
  readonly qemuArgs?: readonly string[];
  /** QEMU binary (default: $LAZYBOOT_QEMU or qemu-system-x86_64 on PATH). */
  readonly qemuBinary?: string;
  /** Per-request repository timeout in ms (default 10 000). */
  readonly fetchTimeoutMs?: number;
  /** Largest window fetched ahead of a sequential guest (default 8 MiB; 0 = only what the guest reads). */
  readonly fetchAheadBytes?: number;
  /** Diagnostic lines from the COR device (fetch failures, map recovery). */
  readonly log?: (line: string) => void;
}

export interface LazyVm extends AsyncDisposable {
  /** The guest's own storage driver has the disk. */
  readonly storageReady: Promise<void>;
  /** The guest is up (agent answered with `agent: true`, else boot-complete). Rejects with the failure. */
  readonly ready: Promise<void>;
  /** Everything that happened, live and replayable (`for await` ends at teardown). */
  readonly events: EventStream<VmEvent>;
  /** Resolves when the VM has been torn down (closed, failed, or the guest powered off). */
  readonly closed: Promise<void>;
  readonly state: VmState;
  /** The error that failed the VM, if it failed. */
  readonly failure: Error | undefined;
  readonly diskPath: string;
  readonly image: string;
  /** The image's disk size in bytes. */
  readonly imageBytes: number;
  /** Blocks fetched / present / modified on the local disk, read requests, failed fetches. */
  stats(): CorStats;
  exec(program: string, args?: readonly string[], options?: { timeoutMs?: number }): Promise<ExecResult>;
  close(): Promise<void>;
}

export async function launch(options: LaunchOptions): Promise<LazyVm> {
  const memoryMiB = parseMemoryMiB(options.memory ?? 512);
  const tempDiskDir = options.disk ? undefined : await mkdtemp(path.join(tmpdir(), 'lazyboot-disk-'));
  const diskPath = path.resolve(options.disk ?? path.join(tempDiskDir!, 'disk.raw'));
  let cor: CorDevice | undefined;
  try {
    cor = await openCorDevice({ image: options.image, disk: diskPath, from: [...(options.from ?? [])], fill: options.fill, fillRate: options.fillRate, log: options.log,
      fetchTimeoutMs: options.fetchTimeoutMs, fetchAheadBytes: options.fetchAheadBytes,
    });
  } catch (error) {
    if (tempDiskDir) await rm(tempDiskDir, { recursive: true, force: true });
    throw error;
  }
  const device = cor;
  let lastStats = device.stats();
  const vm = await TransientVm.start({
    disk: {
      spec: { kind: 'nbd', socketPath: device.socketPath, exportName: device.exportName },
      close: async () => {
        lastStats = device.stats();
        try {
          await device.close();
        } finally {
          if (tempDiskDir) await rm(tempDiskDir, { recursive: true, force: true });
        }
      },
    },
    accel: options.accel,
    memoryMiB,
    cpus: options.cpus,
    console: options.console,
    serialLog: options.consoleLog,
    agent: options.agent,
    timeoutMs: options.timeoutMs ?? 300_000,
    binary: options.qemuBinary,
    extraArgs: options.qemuArgs,
  });
  // TransientVm.start closed the disk itself if it threw.
  return {
    storageReady: vm.storageReady,
    ready: vm.ready,
    events: vm.events,
    closed: vm.closed,
    get state() {
      return vm.state;
    },
    get failure() {
      return vm.lifecycle.failure;
    },
    diskPath,
    image: `${device.manifest.name}@${device.manifest.version}`,
    imageBytes: device.manifest.size,
    stats: () => (vm.lifecycle.isFinal ? lastStats : (lastStats = device.stats())),
    exec: (program, args, execOptions) => vm.exec(program, args, execOptions),
    close: () => vm.close(),
    [Symbol.asyncDispose]: () => vm.close(),
  };
}

/** "512M", "1G", "2048" (MiB) or a number of MiB. */
export function parseMemoryMiB(value: number | string): number {
  if (typeof value === 'number') return value;
  const match = /^(\d+)\s*([MG])?i?B?$/i.exec(value.trim());
  if (!match) throw new UsageError(`invalid memory size ${JSON.stringify(value)}`, 'use e.g. 512M or 1G');
  const amount = Number(match[1]);
  return match[2]?.toUpperCase() === 'G' ? amount * 1024 : amount;
}
