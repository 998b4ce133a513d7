// The transient VM's native phase: the live pivot to QEMU's native graph (or a boot straight on
// it), the fill block job after it, and the fleecing view a live snapshot reads (native-fleece.ts).
// TransientVm owns the QEMU process and the lifecycle; this part holds what the pivot adds (is the
// VM native, the running fill, its last progress) and reports it as VM events.
import { IllegalVmAction } from './errors.js';
import { LazybootError } from '../lib/base/errors.js';
import { FillJob, type FillJobProgress } from './fill-job.js';
import { livePivot, NATIVE_NODE, WRITES_BITMAP, type LivePivotResult, type NativeGraph } from './native-graph.js';
import type { QmpClient } from './qmp.js';
import { NativeFleece } from './native-fleece.js';

/** The VM events this phase emits (a subset of VmEvent, vm.ts). */
export type NativePhaseEvent =
  /** QEMU booted straight on the native graph (a reboot pivot, or a resumed one): no transient phase. */
  | { readonly type: 'native-boot'; readonly atMs: number }
  /** The live pivot: the guest ran on QEMU's native graph from here; it was paused `pauseMs`. */
  | { readonly type: 'pivot'; readonly pauseMs: number; readonly drainMs: number; readonly atMs: number }
  /** The fill block job (fill-job.ts): progress in bytes, its end, or its failure. */
  | { readonly type: 'fill-progress'; readonly offset: number; readonly len: number; readonly atMs: number }
  /** A read from the repository failed: the job paused and is retried every few seconds. */
  | { readonly type: 'fill-paused'; readonly message: string; readonly atMs: number }
  /** Still paused after FILL_STALL_REPORT_MS: the repository stays away (the job keeps waiting, up to its limit). */
  | { readonly type: 'fill-stalled'; readonly message: string; readonly stalledMs: number; readonly atMs: number }
  /** The reads succeed again: the job runs on. */
  | { readonly type: 'fill-resumed'; readonly pausedMs: number; readonly atMs: number }
  | { readonly type: 'fill-complete'; readonly atMs: number }
  | { readonly type: 'fill-failed'; readonly message: string; readonly atMs: number };

/** Where the native phase stands, for `ps` and the API. */
export interface NativeStatus {
  /** none: transient; pivoting: the swap is under way; native: QEMU's block layer has the disk. */
  readonly pivot: 'none' | 'pivoting' | 'native';
  /** none: no fill job; running / paused / complete / failed; progress in bytes while known. */
  readonly fill: 'none' | 'running' | 'paused' | 'complete' | 'failed';
  readonly fillOffset?: number;
  readonly fillLen?: number;
}

export interface NativePhaseHooks {
  /** QMP to QEMU, while it runs and nobody is tearing it down (else undefined: the action is refused). */
  readonly qmp: (action: string) => QmpClient;
  readonly emit: (event: NativePhaseEvent) => void;
  readonly elapsedMs: () => number;
  /** True once teardown began: a failure then is the teardown's doing, not the VM's. */
  readonly closing: () => boolean;
}

export class NativePhase {
  #pivot: NativeStatus['pivot'] = 'none';
  #fill: FillJob | undefined;
  #fillState: NativeStatus['fill'] = 'none';
  #progress: FillJobProgress | undefined;

  constructor(private readonly hooks: NativePhaseHooks) {}

  /** On QEMU's native graph since a pivot (or while it is being swapped). */
  get isNative(): boolean {
    return this.#pivot !== 'none';
  }

  get status(): NativeStatus {
    const progress = this.#progress ? { fillOffset: this.#progress.offset, fillLen: this.#progress.len } : {};
    return { pivot: this.#pivot, fill: this.#fillState === 'running' && this.#progress?.paused ? 'paused' : this.#fillState, ...progress };
  }

  /**
   * QEMU was started paused (-S) on the native graph (nativeBootSpec): the writes bitmap is added
   * before the first guest instruction, then the guest runs.
   */
  async bootNative(qmp: QmpClient, graph: NativeGraph): Promise<void> {
    await qmp.execute('block-dirty-bitmap-add', { node: NATIVE_NODE, name: WRITES_BITMAP, persistent: true, granularity: graph.blockSize });
    this.#pivot = 'native';
    await qmp.execute('cont');
    this.hooks.emit({ type: 'native-boot', atMs: this.hooks.elapsedMs() });
  }

  /** The live swap (native-graph.ts); the caller checked the lifecycle allows it. */
  async pivot(graph: NativeGraph, whilePaused: () => Promise<void>): Promise<LivePivotResult> {
    if (this.#pivot !== 'none') throw new IllegalVmAction('pivot again', 'native');
    const qmp = this.hooks.qmp('pivot');
    this.#pivot = 'pivoting';
    const result = await livePivot(qmp, graph, whilePaused);
    this.#pivot = 'native';
    this.hooks.emit({ type: 'pivot', pauseMs: result.pauseMs, drainMs: result.drainMs, atMs: this.hooks.elapsedMs() });
    return result;
  }

  /** block-stream at `speed` bytes/s (0 = unlimited); resolves when it completed, rejects with FillJobFailed. */
  async fill(speed: number, state: string, giveUpAfterMs?: number): Promise<void> {
    if (this.#pivot !== 'native' || this.#fill) throw new IllegalVmAction(this.#fill ? 'fill twice' : 'fill before the pivot', state);
    const fill = await FillJob.start(this.hooks.qmp('fill'), {
      speed,
      giveUpAfterMs,
      onProgress: (progress) => {
        this.#progress = progress;
        this.hooks.emit({ type: 'fill-progress', offset: progress.offset, len: progress.len, atMs: this.hooks.elapsedMs() });
      },
      onErrorPaused: (message) => this.hooks.emit({ type: 'fill-paused', message, atMs: this.hooks.elapsedMs() }),
      onStalled: (stalledMs, message) => this.hooks.emit({ type: 'fill-stalled', message, stalledMs, atMs: this.hooks.elapsedMs() }),
      onResumed: (pausedMs) => this.hooks.emit({ type: 'fill-resumed', pausedMs, atMs: this.hooks.elapsedMs() }),
    });
    this.#fill = fill;
    this.#fillState = 'running';
    try {
      await fill.done;
      this.#fillState = 'complete';
      this.hooks.emit({ type: 'fill-complete', atMs: this.hooks.elapsedMs() });
    } catch (error) {
      this.#fillState = 'failed';
      // The whole line, with what to do (the CLI prints it as it is).
      const message = error instanceof LazybootError ? error.toLine() : (error as Error).message;
      if (!this.hooks.closing()) this.hooks.emit({ type: 'fill-failed', message, atMs: this.hooks.elapsedMs() });
      throw error;
    }
  }

  /**
   * On the native graph: QEMU's point-in-time view of the disk for a live snapshot
   * (native-fleece.ts), prepared; the caller fixes the instant, reads, and closes it.
   */
  async prepareFleece(options: { dir: string; size: number; blockSize: number }): Promise<NativeFleece> {
    if (this.#pivot !== 'native') throw new IllegalVmAction('take a native snapshot of', this.#pivot === 'pivoting' ? 'pivoting' : 'not pivoted');
    return NativeFleece.prepare(this.hooks.qmp('snapshot'), options);
  }

  /** Before QEMU quits: a running fill is paused, so the quit cuts no stream write short. */
  async beforeQuit(qmp: QmpClient): Promise<void> {
    if (this.#fill && !qmp.closed) await this.#fill.pause().catch(() => undefined);
    this.#fill?.stopWatching();
  }
}
