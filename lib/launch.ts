// The harness API: `launch({ image })` boots an image from a repository inside QEMU on a
// copy-on-read disk and returns a VM to wait on, run commands in, and close (or `await using`).
// The composition above both parts: it joins the COR device (lib/cor) to the VMM (vmm/).
// It touches no process-wide state: signals and V8 tuning are the process owner's opt-ins
// (installSignalTeardown in base/cleanup.ts, tuneProcess in process-tuning.ts).
// Over 300 lines: LazyVm's documented face, and launch() which orders the parts' start
// and teardown in one place (each step a call into its part), so the order is read top to bottom.
import { mkdtemp, rm } from 'node:fs/promises';
import { UsageError } from './base/errors.js';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openCorDevice, type CorDevice, type CorDeviceStats } from './cor/device.js';
import type { TraceOutcome } from './cor/boot-tracing.js';
import { vmOptionsOf, type LaunchOptions } from './launch-options.js';
import { withVmDefaults } from '../vmm/vm-options.js';
import { TransientVm, type ExecResult, type NativeStatus, type StorageReadySource, type VmEvent } from '../vmm/vm.js';
import type { RunCommandOptions, RunOutcome } from '../vmm/guest-command.js';
import type { CopyResult } from '../guest/agent-files.js';
import type { EventStream } from '../vmm/event-stream.js';
import type { VmState } from '../vmm/lifecycle.js';
import type { PivotOutcome } from './pivot/live-pivot.js';
import type { FoldResult } from './pivot/fold-native.js';
import { recoverInterruptedPivot } from './pivot/interrupted-pivot.js';
import { assertPivotable, LaunchPivot } from './pivot/launch-pivot.js';
import { bootToStorageReady } from './pivot/reboot-pivot.js';
import type { NativeGraph } from '../vmm/native-graph.js';
import { snapshot, type SnapshotResult } from './snapshot/snapshot.js';
import { checkReplicationSettings, replicationAttachment, type ReplicationSettings } from './snapshot/replicate.js';
import { describePass } from './snapshot/replicator.js';
import { exitSnapshotTarget, SnapshotNotTaken } from './snapshot/on-exit.js';
import { liveSnapshot, type GuestFreezer, type LiveSnapshotOptions, type LiveSnapshotResult } from './snapshot/live-snapshot.js';
import { nativeSnapshot } from './snapshot/native-snapshot.js';
import { GuestFreezeFailed, LiveSnapshotBusy, LiveSnapshotDuringPivot } from './snapshot/errors.js';
import { BlockMap } from './map/block-map.js';
import { mapPathOf } from './cor/device.js';
import { IllegalVmAction } from '../vmm/errors.js';
import type { DeviceAttachment, OpenedDisk } from './cor/device.js';
import { canonicalWriteUri } from './write/open-write-target.js';
import { validateImageName } from './repo/image-name.js';

export type { LaunchOptions, PivotMode } from './launch-options.js';
export type { PivotOutcome } from './pivot/live-pivot.js';
export type { FoldResult } from './pivot/fold-native.js';
export type { VmEvent, ExecResult, StorageReadySource, NativeStatus } from '../vmm/vm.js';
export type { VmState } from '../vmm/lifecycle.js';
export type { RunCommandOptions, RunOutcome } from '../vmm/guest-command.js';
export type { CopyResult } from '../guest/agent-files.js';
export type { LiveSnapshotResult } from './snapshot/live-snapshot.js';

/** A snapshot of the running VM's disk (LazyVm.snapshot). */
export interface LiveSnapshotRequest {
  /** Image name of the new version. */
  readonly as: string;
  /** Write URI (a directory, http+unix:///?socket=…, http://…); default: as for snapshotOnExit. */
  readonly to?: string;
  /**
   * Freeze the guest's file systems through its agent for the instant (default: when an agent
   * answers; true without one is an error). false: crash-consistent.
   */
  readonly freeze?: boolean;
  readonly onProgress?: (progress: { blockSize: number; doneBlocks: number; dirtyBlocks: number; blockBytesSent: number }) => void | Promise<void>;
  /** Dirty data read, offered and sent per round trip (default 16 MiB). */
  readonly batchBytes?: number;
  /** Aborting stops between batches, as closing the VM does: the marks go back, SnapshotInterrupted. */
  readonly signal?: AbortSignal;
}

export interface LazyVm extends AsyncDisposable {
  /** The guest's own storage driver has the disk. */
  readonly storageReady: Promise<void>;
  /** Who said storage-ready: the image's lazyboot hook, or qemu-guest-agent (undefined until then). */
  readonly storageReadySource: StorageReadySource | undefined;
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
  /**
   * With `pivot: 'live'`: resolves once the guest runs on QEMU's native graph (with the measured
   * pause); resolves undefined without a pivot, or when the VM ends before it (see `failure`).
   */
  readonly pivoted: Promise<PivotOutcome | undefined>;
  /**
   * With a live pivot and `fill`: resolves true once QEMU's block-stream has filled the disk and
   * the COR device has left the data path; false without a fill, or when it failed (logged).
   */
  readonly filled: Promise<boolean>;
  /** After a pivot, once closed: what QEMU's allocation and writes bitmap added to the map. */
  readonly folded: FoldResult | undefined;
  /**
   * Pivots now (a VM launched with `pivot: 'none'`; with `'live'` it returns that pivot): waits for
   * storage-ready, moves the disk to QEMU's native graph, then (unless `fill: false`) starts the
   * block-stream fill at `fillRate` (default: the launch's, else unlimited) — its progress and end
   * are `fill-progress` / `fill-complete` / `fill-failed` events. Rejects when the pivot cannot
   * happen (e.g. StorageReadinessUnknown, ClusterSizeUnsupported) and the VM runs on transient.
   */
  pivot(options?: { readonly fill?: boolean; readonly fillRate?: number }): Promise<PivotOutcome>;
  /** Where the VM stands now: lifecycle state, readiness, pivot and fill, what the disk fetched. */
  status(): LazyVmStatus;
  /** Blocks fetched / present / modified on the local disk, read requests, failed fetches; the boot trace's replay and recording. */
  stats(): CorDeviceStats;
  /**
   * What became of this boot's trace once the guest was ready (recorded, added, re-recorded), or
   * undefined when tracing is off or the boot never got ready.
   */
  readonly traceOutcome: Promise<TraceOutcome | undefined>;
  /**
   * With `snapshotOnExit`: resolves once the VM ended and the disk was shipped, with the snapshot's
   * summary (undefined without the option, or when the VM never started); rejects with the
   * snapshot's error (its marks are kept: `lazyboot snapshot --disk` retries it for a kept disk).
   */
  readonly snapshotted: Promise<SnapshotResult | undefined>;
  /**
   * A point-in-time snapshot of the running disk, shipped as a new version: the guest's file
   * systems are frozen for milliseconds, blocks it rewrites meanwhile are copied first. Before the
   * pivot through the COR device (lib/snapshot/live-snapshot.ts), after it through QEMU's own
   * fleecing (lib/snapshot/native-snapshot.ts), also while the fill runs; during the pivot's swap
   * it rejects with LiveSnapshotDuringPivot.
   */
  snapshot(request: LiveSnapshotRequest): Promise<LiveSnapshotResult>;
  exec(program: string, args?: readonly string[], options?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Runs a command with live output on the given sinks (stream ports); a timeout kills it in the guest. Needs `agent: true`. */
  run(command: readonly string[], options: RunCommandOptions): Promise<RunOutcome>;
  /** Copies a host file into the guest (agent file calls); the guest's directory must exist. */
  copyIn(hostPath: string, guestPath: string): Promise<CopyResult>;
  /** Copies a guest file to the host (atomically replaced). */
  copyOut(guestPath: string, hostPath: string): Promise<CopyResult>;
  /** The serial console log (removed at close unless `consoleLog` was given). */
  readonly consoleLog: string;
  /** QEMU's block nodes (node name, driver): which parts are in the data path now. */
  blockNodes(): Promise<Array<{ nodeName: string; driver: string }>>;
  close(): Promise<void>;
}

const NOTHING_ATTACHED: DeviceAttachment = { close: async () => undefined };

/** Passes that did something, or failed, are logged unless the caller watches them itself. */
function withPassLog(settings: ReplicationSettings, log: ((line: string) => void) | undefined): ReplicationSettings {
  return {
    ...settings,
    log: settings.log ?? log,
    onPass: settings.onPass ?? ((pass) => {
      if (pass.error || pass.sentBlocks > 0) log?.(describePass(pass));
    }),
  };
}

export interface LazyVmStatus extends NativeStatus {
  readonly state: VmState;
  /** Who said storage-ready; null until someone did. */
  readonly storageReady: StorageReadySource | null;
  readonly fetchedBytes: number;
  readonly presentBlocks: number;
  readonly totalBlocks: number;
}

export async function launch(options: LaunchOptions): Promise<LazyVm> {
  // Bad VM options fail here, before anything is fetched or created.
  const pivotMode = options.pivot ?? 'none';
  if (pivotMode !== 'live' && pivotMode !== 'reboot' && pivotMode !== 'none') throw new UsageError(`unknown pivot mode ${JSON.stringify(pivotMode)}`, 'use live, reboot or none');
  // A pivot needs a storage-ready: without our hooks only the guest agent can say it.
  const vmOptions = withVmDefaults({ ...vmOptionsOf(options), agent: pivotMode !== 'none' && !options.agent ? 'optional' : options.agent });
  if (options.replicate) checkReplicationSettings(options.replicate);
  const exitSnapshot = options.snapshotOnExit ? { as: options.snapshotOnExit.as, to: exitSnapshotTarget(options.snapshotOnExit, options.from ?? []) } : undefined;
  if (exitSnapshot) {
    validateImageName(exitSnapshot.as);
    canonicalWriteUri(exitSnapshot.to);
  }
  let settleSnapshot!: (outcome: () => Promise<SnapshotResult | undefined>) => void;
  let snapshotSettled = false;
  const snapshotted = new Promise<SnapshotResult | undefined>((resolve, reject) => {
    settleSnapshot = (outcome) => {
      if (snapshotSettled) return;
      snapshotSettled = true;
      void outcome().then(resolve, reject);
    };
  });
  snapshotted.catch(() => undefined); // the caller may not ask
  const tempDiskDir = options.disk ? undefined : await mkdtemp(path.join(tmpdir(), 'lazyboot-disk-'));
  const diskPath = path.resolve(options.disk ?? path.join(tempDiskDir!, 'disk.raw'));
  let cor: CorDevice | undefined;
  let openedDisk: OpenedDisk | undefined;
  /** The live snapshot under way: the disk's close stops it (its marks go back) before the disk closes. */
  let liveSnapshotRun: { readonly stop: AbortController; readonly done: Promise<unknown> } | undefined;
  let resumed = false;
  const deviceOptions = { image: options.image, disk: diskPath, from: [...(options.from ?? [])], s3Endpoint: options.s3Endpoint, log: options.log, fetchTimeoutMs: options.fetchTimeoutMs };
  if (options.disk) {
    const recovered = await recoverInterruptedPivot(diskPath, async () => {
      const probe = await openCorDevice(deviceOptions);
      await probe.close();
      return probe.manifest;
    });
    if (recovered) options.log?.(`${diskPath}: an earlier pivot was not recorded (interrupted); recorded now: ${recovered.newlyPresent} blocks QEMU made present, ${recovered.written} written by the guest (from the ${recovered.writesFrom === 'bitmap' ? 'writes bitmap' : 'manifest digests'})`);
    // Asked to pivot again: QEMU takes the disk up where it left it, booting on the native graph.
    resumed = recovered !== undefined && pivotMode !== 'none';
  }
  /** QEMU boots straight on the native graph: a reboot pivot's second boot, or a resumed pivot. */
  const bootsNative = pivotMode === 'reboot' || resumed;
  try {
    cor = await openCorDevice({
      image: options.image,
      disk: diskPath,
      from: [...(options.from ?? [])],
      s3Endpoint: options.s3Endpoint,
      // With a pivot QEMU's block-stream fills after it (below), not the COR device.
      fill: options.fill && pivotMode === 'none',
      fillRate: options.fillRate,
      log: options.log,
      onConnectionEvent: options.onConnectionEvent,
      fetchTimeoutMs: options.fetchTimeoutMs,
      fetchAheadBytes: options.fetchAheadBytes,
      cache: options.cache,
      // Recorded on a first boot of the image version, replayed (and refined) on the later ones.
      // (Not for a native boot: the device reads through unrecorded, and a replay would write.)
      trace: options.trace === false || bootsNative ? false : (options.trace ?? {}),
      // The open disk is kept for live snapshots; the replicator runs beside it if asked for.
      attach: async (disk) => {
        openedDisk = disk;
        return options.replicate ? replicationAttachment(withPassLog(options.replicate, options.log))(disk) : NOTHING_ATTACHED;
      },
    });
  } catch (error) {
    if (tempDiskDir) await rm(tempDiskDir, { recursive: true, force: true });
    throw error;
  }
  const device = cor;
  if (pivotMode !== 'none') {
    try {
      assertPivotable(device.manifest.blockSize);
    } catch (error) {
      await device.close();
      if (tempDiskDir) await rm(tempDiskDir, { recursive: true, force: true });
      throw error;
    }
  }
  let folded: FoldResult | undefined;
  let lastStats = device.stats();
  let traceStored: Promise<TraceOutcome | undefined> = Promise.resolve(undefined);
  /** The VM came up (a start that failed ships no snapshot). */
  let vmStarted = false;
  const pivotting = new LaunchPivot(device, { diskPath, diskGiven: options.disk !== undefined, tempDiskDir, log: options.log }, () => (lastStats = device.stats()));
  let nativeGraph: NativeGraph | undefined;
  /** What the repository had served before the native QEMU started (reboot pivot: its boot should add nothing). */
  let fetchedBeforeNativeBoot = 0;
  if (bootsNative) {
    try {
      if (pivotMode === 'reboot') await bootToStorageReady({ ...vmOptions, disk: { spec: { kind: 'nbd', socketPath: device.socketPath, exportName: device.exportName }, close: async () => {} } }, options.log);
      nativeGraph = await pivotting.prepareNativeBoot();
      fetchedBeforeNativeBoot = device.stats().fetchedBytes;
    } catch (error) {
      await device.close();
      await pivotting.afterQemuExit().catch(() => undefined);
      await pivotting.release();
      if (tempDiskDir) await rm(tempDiskDir, { recursive: true, force: true });
      throw error;
    }
  }
  const started = await TransientVm.start({
    ...vmOptions,
    disk: {
      spec: { kind: 'nbd', socketPath: device.socketPath, exportName: device.exportName },
      close: async () => {
        // A live snapshot stops at its next batch, its marks back in the map, before the disk closes.
        liveSnapshotRun?.stop.abort();
        await liveSnapshotRun?.done.catch(() => undefined);
        // A trace being stored is finished first (a CLI exits soon after closing).
        await traceStored;
        if (!pivotting.deviceLeft) lastStats = device.stats();
        try {
          await device.close();
          // QEMU has exited: what it wrote and allocated since the pivot goes into the map.
          folded = await pivotting.afterQemuExit();
          // The disk is whole and ours again: ship it before a temporary disk goes.
          if (exitSnapshot && vmStarted) {
            await pivotting.release();
            const shipped = snapshot({ disk: diskPath, to: exitSnapshot.to, as: exitSnapshot.as, s3Endpoint: options.s3Endpoint, log: options.log });
            settleSnapshot(() => shipped);
            await shipped.catch(() => undefined);
          }
        } finally {
          // Not shipped: the VM never started, or closing the disk failed (then say so).
          settleSnapshot(async () => {
            if (exitSnapshot && vmStarted) throw new SnapshotNotTaken(diskPath);
            return undefined;
          });
          await pivotting.release();
          if (tempDiskDir) await rm(tempDiskDir, { recursive: true, force: true });
        }
      },
    },
    requireStorageReady: pivotMode === 'live' && !bootsNative,
    ...(nativeGraph ? { bootNative: nativeGraph } : {}),
  });
  // TransientVm.start closed the disk itself if it threw.
  vmStarted = true;
  pivotting.attach(started);
  const fillRequest = { fill: options.fill ?? false, fillRate: options.fillRate ?? 0, fillOutageMs: options.fillOutageMs };
  const autoPivot = bootsNative
    ? pivotting.startAfterNativeBoot(fillRequest, resumed ? 'resume' : 'reboot', () => device.stats().fetchedBytes - fetchedBeforeNativeBoot)
    : pivotMode === 'live'
      ? pivotting.start(fillRequest)
      : undefined;
  const pivoted: Promise<PivotOutcome | undefined> = autoPivot
    ? autoPivot.then(
        (pivot) => pivot.outcome,
        (error: Error) => {
          // Asked for a pivot that cannot happen: the VM ends with the reason (unless it ended already).
          if (!started.lifecycle.isFinal) started.abort(error);
          return undefined;
        },
      )
    : Promise.resolve(undefined);
  const filled: Promise<boolean> = autoPivot ? autoPivot.then((pivot) => pivot.filled, () => false) : Promise.resolve(false);
  const stats = () => (started.lifecycle.isFinal || pivotting.deviceLeft ? lastStats : (lastStats = device.stats()));
  // The boot ends when the guest is ready: the replay stops and the recording is stored. (After a
  // live pivot the device reads through, unrecorded: QEMU's block-stream is no boot to learn from.)
  const trace = device.trace;
  let traceOutcome: Promise<TraceOutcome | undefined> = Promise.resolve(undefined);
  if (trace) {
    started.storageReady.then(() => trace.milestone('storage-ready'), () => {});
    traceOutcome = started.ready.then(() => (traceStored = trace.finish()), () => undefined);
  }
  /**
   * After the pivot (lib/snapshot/native-snapshot.ts): the map is the COR device's while it reads
   * through, else (it left after the fill) the map file, opened for the snapshot alone.
   */
  const snapshotNative = async (deviceMap: boolean, snapshotOptions: LiveSnapshotOptions): Promise<LiveSnapshotResult> => {
    const prepareFleece = (fleece: { dir: string; size: number; blockSize: number }) => started.prepareFleece(fleece);
    if (deviceMap) return nativeSnapshot({ path: diskPath, map: openedDisk!.backend.map, local: openedDisk!.local, prepareFleece }, snapshotOptions);
    // Its writes are W bits and shipping state only (no data of ours to sync before them).
    const map = await BlockMap.open(mapPathOf(diskPath), async () => {});
    try {
      return await nativeSnapshot({ path: diskPath, map, local: openedDisk!.local, prepareFleece }, snapshotOptions);
    } finally {
      await map.close();
    }
  };
  return {
    traceOutcome,
    snapshotted,
    pivoted,
    filled,
    get folded() {
      return folded;
    },
    storageReady: started.storageReady,
    get storageReadySource() {
      return started.storageReadySource;
    },
    ready: started.ready,
    events: started.events,
    closed: started.closed,
    get state() {
      return started.state;
    },
    get failure() {
      return started.lifecycle.failure;
    },
    diskPath,
    image: `${device.manifest.name}@${device.manifest.version}`,
    imageBytes: device.manifest.size,
    stats,
    pivot: async (request = {}) => {
      const pivot = await pivotting.start({ fill: request.fill ?? true, fillRate: request.fillRate ?? options.fillRate ?? 0, fillOutageMs: options.fillOutageMs });
      return pivot.outcome;
    },
    status: () => {
      const now = stats();
      return { state: started.state, storageReady: started.storageReadySource ?? null, ...started.nativeStatus, fetchedBytes: now.fetchedBytes, presentBlocks: now.presentBlocks, totalBlocks: now.totalBlocks };
    },
    snapshot: async (request) => {
      // A swap under way: neither the device nor QEMU alone has the disk.
      if (started.nativeStatus.pivot === 'pivoting') throw new LiveSnapshotDuringPivot(diskPath);
      const to = exitSnapshotTarget({ as: request.as, to: request.to }, options.from ?? []);
      if (request.freeze === true && !started.hasAgent) throw new GuestFreezeFailed('no guest agent answers (boot with --agent, on an image with qemu-guest-agent)');
      const freezer: GuestFreezer | undefined = request.freeze !== false && started.hasAgent
        ? { freeze: () => started.freezeFilesystems(), thaw: () => started.thawFilesystems() }
        : undefined;
      if (started.lifecycle.isFinal || started.state === 'stopping') throw new IllegalVmAction('snapshot', started.state);
      if (liveSnapshotRun) throw new LiveSnapshotBusy(diskPath);
      const stop = new AbortController();
      const forward = (): void => stop.abort();
      request.signal?.addEventListener('abort', forward, { once: true });
      if (request.signal?.aborted) stop.abort();
      const snapshotOptions = { to, as: request.as, s3Endpoint: options.s3Endpoint, freezer, log: options.log, onProgress: request.onProgress, batchBytes: request.batchBytes, signal: stop.signal };
      const done = started.nativeStatus.pivot === 'native'
        ? pivotting.withMap((deviceMap) => snapshotNative(deviceMap, snapshotOptions))
        : liveSnapshot({ path: diskPath, map: openedDisk!.backend.map, local: openedDisk!.local, backend: openedDisk!.backend }, snapshotOptions);
      const run = { stop, done };
      liveSnapshotRun = run;
      try {
        return await done;
      } finally {
        request.signal?.removeEventListener('abort', forward);
        if (liveSnapshotRun === run) liveSnapshotRun = undefined;
      }
    },
    exec: (program, args, execOptions) => started.exec(program, args, execOptions),
    blockNodes: () => started.blockNodes(),
    run: (command, runOptions) => started.runCommand(command, runOptions),
    copyIn: (hostPath, guestPath) => started.copyToGuest(hostPath, guestPath),
    copyOut: (guestPath, hostPath) => started.copyFromGuest(guestPath, hostPath),
    get consoleLog() {
      return started.consoleLog;
    },
    close: () => started.close(),
    [Symbol.asyncDispose]: () => started.close(),
  };
}
