// One transient VM: owns its QEMU process, QMP connection, guest channels, disk (e.g. the COR
// device) and run directory, drives the lifecycle state machine from what it sees, and tears
// everything down exactly once — on close(), on failure, on guest poweroff, and on SIGINT/SIGTERM
// only if the process's owner opted in (installSignalTeardown). At process exit QEMU is killed
// whatever happens (a synchronous kill: no async work runs then). Its parts: what the guest says
// about readiness (vm-readiness.ts), the pivot or native boot and the fill (vm-native.ts), exec,
// commands and file copies (vm-guest-io.ts), a panic told from a reset (console-panic.ts).
import path from 'node:path';
import { rm } from 'node:fs/promises';
import { panicLineIn } from './console-panic.js';
import { dir } from 'tmp-promise';
import { registerCleanup } from '../lib/base/cleanup.js';
import { chooseAccelerator, type AccelChoice } from './accel.js';
import { BootTimeout, GuestDiskError, GuestPanicked, IllegalVmAction, QemuExited, StorageReadinessUnknown, VmEndedEarly } from './errors.js';
import { EventStream } from './event-stream.js';
import { launchQemu, type LaunchedQemu } from './launcher.js';
import type { QemuExit } from './qemu-process.js';
import { VmLifecycle, type VmState, type VmTransition } from './lifecycle.js';
import type { DiskSpec } from './qemu-args.js';
import type { QmpEvent } from './qmp.js';
import { GuestReadiness, type ReadinessEvent, type StorageReadySource } from './vm-readiness.js';
import { withVmDefaults, type ResolvedVmOptions, type VmOptions } from './vm-options.js';
import type { RunCommandOptions, RunOutcome } from './guest-command.js';
import type { CopyResult } from '../guest/agent-files.js';
import { nativeBootSpec, type LivePivotResult, type NativeGraph } from './native-graph.js';
import { NativePhase, type NativePhaseEvent, type NativeStatus } from './vm-native.js';
import type { NativeFleece } from './native-fleece.js';
import { GuestIo, guestSocketsIn, type ExecResult } from './vm-guest-io.js';

export type { ExecResult } from './vm-guest-io.js';
export type { NativeStatus } from './vm-native.js';
export type { StorageReadySource } from './vm-readiness.js';

/** The VM's disk as the VMM sees it: how QEMU reaches it, and how to release it. */
export interface VmDisk {
  readonly spec: DiskSpec;
  /** Closed (flushed and stopped) after QEMU has exited. */
  close(): Promise<void>;
}

/** The VM options (vm-options.ts: names and defaults) and the disk to boot. */
export interface StartVmOptions extends VmOptions {
  readonly disk: VmDisk;
  /**
   * A pivot will need storage-ready: a guest that is up without it, or the boot timeout without
   * it, fails the VM with StorageReadinessUnknown (one line saying why and what to do).
   */
  readonly requireStorageReady?: boolean;
  /**
   * Boot straight on QEMU's native graph (its metadata file final, the COR device read-through
   * already) instead of `disk.spec`: the VM is native from the first instruction, ready to fill.
   */
  readonly bootNative?: NativeGraph;
}

/**
 * Resolves once the event loop has polled for I/O again: the first immediate runs after this
 * turn's poll, the one it queues after the next turn's, which sees every signal delivered by now.
 */
function afterNextPoll(): Promise<void> {
  return new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
}

export type VmEvent =
  | { readonly type: 'accelerator'; readonly accel: string; readonly reason: string }
  | { readonly type: 'qemu-up'; readonly pid: number | undefined; readonly atMs: number }
  | { readonly type: 'state'; readonly from: VmState; readonly to: VmState; readonly atMs: number }
  | { readonly type: 'qmp-event'; readonly event: QmpEvent; readonly atMs: number }
  /** guest-event, agent-up, storage-ready (vm-readiness.ts). */
  | ReadinessEvent
  /** The pivot and the fill after it (vm-native.ts). */
  | NativePhaseEvent
  | { readonly type: 'torn-down'; readonly atMs: number };

export class TransientVm implements AsyncDisposable {
  readonly lifecycle = new VmLifecycle();
  readonly events = new EventStream<VmEvent>();
  /** Resolves when the guest's own storage driver has the disk (or later states); rejects if the VM ends first. */
  readonly storageReady: Promise<void>;
  /** Resolves when the guest is up (agent answered, or boot-complete without an agent). */
  readonly ready: Promise<void>;
  /** Resolves once teardown is complete. */
  readonly closed: Promise<void>;

  #qemu: LaunchedQemu | undefined;
  /** exec, commands over the stream ports, file copies (vm-guest-io.ts). */
  readonly #guest = new GuestIo(this.lifecycle);
  /** The pivot and the fill (vm-native.ts). */
  readonly #native = new NativePhase({
    qmp: (action) => {
      const qemu = this.#qemu;
      if (!qemu || this.#closing || this.lifecycle.isFinal) throw new IllegalVmAction(action, this.state);
      return qemu.qmp;
    },
    emit: (event) => this.events.emit(event),
    elapsedMs: () => this.elapsedMs(),
    closing: () => this.#closing !== undefined,
  });
  /** Storage-ready and guest-up from the hooks or the agent (vm-readiness.ts). */
  readonly #readiness: GuestReadiness;
  #runDir: { path: string; cleanup(): Promise<void> } | undefined;
  #accel: AccelChoice | undefined;
  #closing: Promise<void> | undefined;
  #markClosed!: () => void;
  readonly #abort = new AbortController();
  readonly #startedAt = Date.now();
  readonly #unregisterCleanup: () => void;
  #bootTimer: NodeJS.Timeout | undefined;
  /** Set while a SHUTDOWN waits for its verdict: a host signal (did this process ask?), a guest reset (a panic?). */
  #shutdownVerdict: Promise<void> | undefined;
  /** QEMU sent SHUTDOWN: it is going down, whoever asked. */
  #qemuShuttingDown = false;

  readonly options: ResolvedVmOptions & Pick<StartVmOptions, 'disk' | 'requireStorageReady' | 'bootNative'>;

  private constructor(options: ResolvedVmOptions & Pick<StartVmOptions, 'disk' | 'requireStorageReady' | 'bootNative'>) {
    this.options = options;
    this.#readiness = new GuestReadiness({
      lifecycle: this.lifecycle,
      signal: this.#abort.signal,
      agent: options.agent,
      timeoutMs: options.timeoutMs,
      emit: (event) => this.events.emit(event),
      elapsedMs: () => this.elapsedMs(),
      fail: (error) => this.#fail(error),
      agentConnected: (agent) => this.#guest.agentConnected(agent),
    });
    const endError = (waitedFor: string) => (state: VmState) => this.lifecycle.failure ?? new VmEndedEarly(waitedFor, state);
    // Only a real source resolves it: a guest that is up without one (no hooks, and no agent that
    // sees `/` on a native disk) never gets a storage-ready that a pivot could trust.
    this.storageReady = this.lifecycle.waitFor(['storage-ready', 'running'], endError('storage-ready')).then(() => {
      if (!this.#readiness.source) throw new StorageReadinessUnknown(this.options.agent !== false, { forPivot: false });
    });
    this.ready = this.lifecycle.waitFor(['running'], endError('running')).then(() => undefined);
    // Nobody may be listening: these rejections are reported through whoever awaits them.
    this.storageReady.catch(() => {});
    this.ready.catch(() => {});
    this.closed = new Promise((resolve) => (this.#markClosed = resolve));
    this.lifecycle.onTransition((transition) => this.#onTransition(transition));
    this.#unregisterCleanup = registerCleanup({
      release: () => this.close(),
      releaseSync: () => this.#qemu?.process.kill('SIGKILL'),
    });
  }

  /** Starts QEMU on `options.disk`; resolves once QEMU answers on QMP (the boot goes on). If it throws, the disk is closed. */
  static async start(options: StartVmOptions): Promise<TransientVm> {
    let resolved: ResolvedVmOptions;
    try {
      resolved = withVmDefaults(options);
    } catch (error) {
      await options.disk.close(); // the promise holds at every exit: a failed start releases the disk
      throw error;
    }
    const vm = new TransientVm({ ...resolved, disk: options.disk, requireStorageReady: options.requireStorageReady, bootNative: options.bootNative });
    try {
      await vm.#start();
    } catch (error) {
      vm.lifecycle.feed({ type: 'failure', error: error as Error });
      await vm.close();
      throw error;
    }
    return vm;
  }

  get state(): VmState {
    return this.lifecycle.state;
  }

  get accelerator(): AccelChoice | undefined {
    return this.#accel;
  }

  /** Who said storage-ready (undefined until someone did). */
  get storageReadySource(): StorageReadySource | undefined {
    return this.#readiness.source;
  }

  get pid(): number | undefined {
    return this.#qemu?.process.pid;
  }

  get runDir(): string | undefined {
    return this.#runDir?.path;
  }

  /** The serial console log: `consoleLog`, or console.log in the run dir. */
  get consoleLog(): string {
    return this.options.consoleLog ?? path.join(this.#runDir?.path ?? '.', 'console.log');
  }

  /** On QEMU's native graph since a pivot. */
  get isNative(): boolean {
    return this.#native.isNative;
  }

  /** Pivot and fill state, with the fill's last progress (for `ps` and the API). */
  get nativeStatus(): NativeStatus {
    return this.#native.status;
  }

  /**
   * The live pivot (native-graph.ts): the guest pauses, `whilePaused` drains the COR device to
   * read-through and finishes the metadata file, the device's drive moves to the native graph,
   * the guest resumes. Allowed once storage-ready; a failure fails the VM (its old disk no longer
   * takes writes) and is thrown.
   */
  async pivot(graph: NativeGraph, whilePaused: () => Promise<void>): Promise<LivePivotResult> {
    this.lifecycle.assertAllowed('pivot');
    if (this.#native.isNative) throw new IllegalVmAction('pivot again', 'native');
    if (!this.#qemu || this.#closing) throw new IllegalVmAction('pivot', this.state);
    try {
      return await this.#native.pivot(graph, whilePaused);
    } catch (error) {
      // A pivot cut short by a teardown is the teardown's doing, not a failure of the VM.
      if (!this.#closing) this.#fail(error as Error);
      throw error;
    }
  }

  /**
   * After the pivot: QEMU's block-stream fills the rest of the disk at `speed` bytes/s (0 =
   * unlimited). Resolves when it completed and the backing node is gone; rejects with
   * FillJobFailed (the guest runs on), e.g. when the repository stayed away `giveUpAfterMs`. Progress and the end are VM events.
   */
  fill(speed: number, options: { giveUpAfterMs?: number } = {}): Promise<void> {
    return this.#native.fill(speed, this.state, options.giveUpAfterMs);
  }

  /** After the pivot: QEMU's point-in-time view of the disk for a live snapshot (vmm/native-fleece.ts). */
  prepareFleece(options: { dir: string; size: number; blockSize: number }): Promise<NativeFleece> {
    return this.#native.prepareFleece(options);
  }

  /** QEMU's block nodes now (query-named-block-nodes): node name and driver, for diagnostics and tests. */
  async blockNodes(): Promise<Array<{ nodeName: string; driver: string }>> {
    const qemu = this.#qemu;
    if (!qemu || qemu.qmp.closed) return [];
    const nodes = await qemu.qmp.execute<Array<{ 'node-name': string; drv: string }>>('query-named-block-nodes', { flat: true });
    return nodes.map((node) => ({ nodeName: node['node-name'], driver: node.drv }));
  }

  /** Ends the VM as failed with `error` (a part above the VMM gave up on it); tears it down. */
  abort(error: Error): void {
    if (!this.#closing) this.#fail(error);
  }

  /** Milliseconds since start. */
  elapsedMs(): number {
    return Date.now() - this.#startedAt;
  }

  /** Runs a program in the guest through qemu-guest-agent (guest-exec); the VM must be running. */
  exec(program: string, args: readonly string[] = [], options: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return this.#guest.exec(program, args, options);
  }

  /** qemu-guest-agent has answered. */
  get hasAgent(): boolean {
    return this.#guest.hasAgent;
  }

  /** Freezes the guest's file systems through the agent (for a point-in-time snapshot); how many. */
  freezeFilesystems(): Promise<number> {
    return this.#guest.freezeFilesystems();
  }

  /** Thaws what freezeFilesystems() froze; how many. */
  thawFilesystems(): Promise<number> {
    return this.#guest.thawFilesystems();
  }

  /** Runs a command in the guest with live output on the sinks (guest-command.ts); the VM must be running. */
  runCommand(command: readonly string[], options: RunCommandOptions): Promise<RunOutcome> {
    return this.#guest.runCommand(command, options);
  }

  /** Copies a host file into the guest through the agent's file calls. */
  copyToGuest(hostPath: string, guestPath: string): Promise<CopyResult> {
    return this.#guest.copyToGuest(hostPath, guestPath);
  }

  /** Copies a guest file out to the host through the agent's file calls. */
  copyFromGuest(guestPath: string, hostPath: string): Promise<CopyResult> {
    return this.#guest.copyFromGuest(guestPath, hostPath);
  }

  /** Tears everything down (idempotent): quit QEMU (kill after a grace period), close channels and disk, remove the run dir. */
  close(): Promise<void> {
    this.#closing ??= this.#teardown();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #start(): Promise<void> {
    const options = this.options;
    this.#accel = await chooseAccelerator(options.accel, { qemuBinary: options.qemuBinary });
    this.events.emit({ type: 'accelerator', accel: this.#accel.accel, reason: this.#accel.reason });
    this.#runDir = await dir({ unsafeCleanup: true, prefix: 'lazyboot-vm-' });
    const { agentSocket, eventsSocket, streamSockets } = guestSocketsIn(this.#runDir.path);
    if (options.timeoutMs > 0) {
      this.#bootTimer = setTimeout(() => {
        const unknown = options.requireStorageReady && !this.#readiness.source;
        this.#fail(unknown ? new StorageReadinessUnknown(options.agent !== false, { waitedMs: options.timeoutMs }) : new BootTimeout('running', options.timeoutMs));
      }, options.timeoutMs);
    }
    this.#qemu = await launchQemu({
      runDir: this.#runDir.path,
      qemuBinary: options.qemuBinary,
      accel: this.#accel.accel,
      machine: options.machine,
      memoryMiB: options.memoryMiB,
      cpus: options.cpus,
      consoleLog: this.consoleLog,
      console: options.console,
      disk: options.bootNative ? nativeBootSpec(options.bootNative) : options.disk.spec,
      guestChannels: { agentSocket, eventsSocket, ...(options.agent ? { streamSockets } : {}) },
      noReboot: true,
      // Paused at start on the native graph: the writes bitmap must exist before the guest writes.
      qemuArgs: options.bootNative ? ['-S', ...(options.qemuArgs ?? [])] : options.qemuArgs,
    });
    const { process, qmp } = this.#qemu;
    if (this.#closing) {
      // Torn down (e.g. Ctrl-C) while QEMU was starting: the teardown did not see it yet.
      await process.stop(qmp, 1000);
      await qmp.close();
      throw new IllegalVmAction('start', 'stopping');
    }
    const onExit = (exit: QemuExit) => {
      if (!this.lifecycle.isFinal && this.state !== 'stopping') {
        this.lifecycle.feed({ type: 'failure', error: new QemuExited(exit.exitCode, exit.signal, process.stderrTail()) });
      }
      this.lifecycle.feed({ type: 'qemu-exited' });
    };
    // A pending host-signal verdict goes first: it knows whether the stop was ours.
    void process.exited.then((exit) => (this.#shutdownVerdict ? this.#shutdownVerdict.then(() => onExit(exit)) : onExit(exit)));
    qmp.onEvent((event) => this.#onQmpEvent(event));
    void this.#readiness.listenToGuest(eventsSocket);
    this.lifecycle.feed({ type: 'qemu-up' });
    this.events.emit({ type: 'qemu-up', pid: process.pid, atMs: this.elapsedMs() });
    if (this.options.agent) {
      void this.#readiness.connectAgent(agentSocket);
      this.#guest.connectStreams(streamSockets, this.#abort.signal);
    }
    if (options.bootNative) await this.#native.bootNative(qmp, options.bootNative);
  }

  #onQmpEvent(event: QmpEvent): void {
    this.events.emit({ type: 'qmp-event', event, atMs: this.elapsedMs() });
    switch (event.event) {
      case 'SHUTDOWN':
        this.#qemuShuttingDown = true;
        if (event.data.reason === 'host-signal' && this.state !== 'stopping') {
          // A signal from someone else ends the VM without the guest's or our consent: a failure.
          // But a terminal's Ctrl-C reaches QEMU and this process together (one process group), and
          // QEMU's answer can be read before our own handler has run: the signal was delivered to us
          // before QEMU could answer it, so by the next poll for I/O that handler (the CLI's
          // teardown, an embedder's close()) has run. Judge after it: a stop we asked for is a stop.
          this.#shutdownVerdict ??= afterNextPoll().then(() => {
            if (this.state !== 'stopping') this.#fail(new QemuExited(undefined, 'a signal', 'terminated by a signal from outside lazyboot'));
          });
        } else if (event.data.reason === 'guest-reset' && this.state !== 'stopping') {
          // -no-reboot: a reset ends the VM. A kernel that panicked (panic=N) resets too: its
          // console says so, and that is a failure with its own error, not a stop.
          this.#shutdownVerdict ??= panicLineIn(this.consoleLog).then((panic) => {
            if (panic) this.#fail(new GuestPanicked(panic));
            else this.lifecycle.feed({ type: 'stop' });
          });
        } else {
          this.lifecycle.feed({ type: 'stop' });
        }
        break;
      case 'BLOCK_IO_ERROR':
        // Once QEMU is shutting down it closes its drives under the guest's last reads ("No medium
        // found"): that is the shutdown, whose own verdict (ours, the guest's, or a signal from
        // outside) decides how the VM ended, not a failure of the disk.
        if (this.#qemuShuttingDown) break;
        this.#fail(new GuestDiskError(String(event.data.operation), String(event.data.reason ?? 'I/O error')));
        break;
      case 'GUEST_PANICKED':
        this.#fail(new GuestPanicked(event.data.info ? JSON.stringify(event.data.info) : undefined));
        break;
    }
  }

  #fail(error: Error): void {
    if (this.lifecycle.isFinal) return;
    this.lifecycle.feed({ type: 'failure', error });
  }

  #onTransition(transition: VmTransition): void {
    this.events.emit({ type: 'state', from: transition.from, to: transition.to, atMs: transition.atMs });
    if (transition.to === 'running' && this.#bootTimer) clearTimeout(this.#bootTimer);
    if (transition.to === 'running' && this.options.requireStorageReady && !this.#readiness.source) {
      // Up, and nobody said storage-ready: waiting longer will not make it come.
      this.#fail(new StorageReadinessUnknown(this.options.agent !== false));
    }
    // Always tear down: a failed VM, or one whose guest powered off, releases everything at once.
    if (transition.to === 'failed' || transition.to === 'stopped') void this.close();
  }

  async #teardown(): Promise<void> {
    clearTimeout(this.#bootTimer);
    this.lifecycle.feed({ type: 'stop' });
    this.#abort.abort();
    const qemu = this.#qemu;
    try {
      if (qemu) {
        // In order: a running fill is paused first, so QEMU's quit cuts no stream write short.
        await this.#native.beforeQuit(qemu.qmp);
        await qemu.process.stop(qemu.qmp, this.options.quitGraceMs);
        await qemu.qmp.close();
      }
      this.#readiness.close();
      await this.#guest.close();
      await this.options.disk.close();
    } finally {
      this.lifecycle.feed({ type: 'qemu-exited' });
      if (this.#runDir) await rm(this.#runDir.path, { recursive: true, force: true });
      this.#unregisterCleanup();
      this.events.emit({ type: 'torn-down', atMs: this.elapsedMs() });
      this.events.end();
      this.#markClosed();
    }
  }
}
