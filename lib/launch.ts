// The harness API: `launch({ image })` boots an image from a repository inside QEMU on a
// copy-on-read disk and returns a VM to wait on, run commands in, and close (or `await using`).
// The composition above both parts: it joins the COR device (lib/cor) to the VMM (vmm/).
// It touches no process-wide state: signals and V8 tuning are the process owner's opt-ins
// (installSignalTeardown in base/cleanup.ts, tuneProcess in process-tuning.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openCorDevice, type CorDevice, type CorStats } from './cor/device.js';
import { vmOptionsOf, type LaunchOptions } from './launch-options.js';
import { withVmDefaults } from '../vmm/vm-options.js';
import { TransientVm, type ExecResult, type VmEvent } from '../vmm/vm.js';
import type { EventStream } from '../vmm/event-stream.js';
import type { VmState } from '../vmm/lifecycle.js';

export type { LaunchOptions } from './launch-options.js';
export type { VmEvent, ExecResult } from '../vmm/vm.js';
export type { VmState } from '../vmm/lifecycle.js';

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
  // Bad VM options fail here, before anything is fetched or created.
  const vmOptions = withVmDefaults(vmOptionsOf(options));
  const tempDiskDir = options.disk ? undefined : await mkdtemp(path.join(tmpdir(), 'lazyboot-disk-'));
  const diskPath = path.resolve(options.disk ?? path.join(tempDiskDir!, 'disk.raw'));
  let cor: CorDevice | undefined;
  try {
    cor = await openCorDevice({
      image: options.image,
      disk: diskPath,
      from: [...(options.from ?? [])],
      fill: options.fill,
      fillRate: options.fillRate,
      log: options.log,
      fetchTimeoutMs: options.fetchTimeoutMs,
      fetchAheadBytes: options.fetchAheadBytes,
      cache: options.cache,
    });
  } catch (error) {
    if (tempDiskDir) await rm(tempDiskDir, { recursive: true, force: true });
    throw error;
  }
  const device = cor;
  let lastStats = device.stats();
  const vm = await TransientVm.start({
    ...vmOptions,
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
