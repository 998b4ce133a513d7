// The background replicator: while a disk is served, uploads its modified blocks to one or more
// repositories every interval, without committing a version, so that a later snapshot only
// commits (it offers the digests and the repository already has every block).
//
// How nothing is lost: the replicator never clears a W bit. A target's W bits keep meaning
// "changed since the version last committed there", and only snapshot() clears them. What the
// replicator knows — which blocks it uploaded with which digest — is an optimisation kept in
// memory: a block the guest writes after it was read is read again at the next pass (the device
// tells it after each write landed, see CorBackend.watchWrites), and a snapshot never trusts it:
// it hashes the marked blocks itself, and sends whatever the repository turns out to lack. After
// a restart the first pass re-reads every marked block and offers the digests: the blocks the
// repository received before are not sent again.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Bitset } from '../map/bitset.js';
import type { BlockMap } from '../map/block-map.js';
import type { LocalDisk } from '../cor/local-disk.js';
import type { WriteTarget } from '../repo/write-target.js';
import { DIGEST_BYTES, ZERO_DIGEST } from '../repo/manifest-format.js';
import { readAndHashBlocks } from './block-runs.js';

export interface ReplicatorTarget {
  /** The map's label for the target (bind-target.ts). */
  readonly label: string;
  /** The target's URI as given. */
  readonly uri: string;
  readonly target: WriteTarget;
}

export interface ReplicatorOptions {
  readonly map: BlockMap;
  readonly local: LocalDisk;
  /** Subscribes to guest writes, told once their data landed (CorBackend.watchWrites). */
  readonly watchWrites: (watcher: (first: number, last: number) => void) => () => void;
  readonly targets: readonly ReplicatorTarget[];
  /** Time between the end of one round of passes and the start of the next. */
  readonly intervalMs: number;
  /** Block data uploaded per second over all targets (0 = unlimited). */
  readonly rate: number;
  /** Block data read, offered and sent per round trip (default 4 MiB; smaller under a low rate). */
  readonly batchBytes?: number;
  readonly log?: (line: string) => void;
  /** After every pass over one target (also a failed one). */
  readonly onPass?: (pass: ReplicationPass) => void;
}

/** One pass over one target. */
export interface ReplicationPass {
  readonly target: string;
  readonly uri: string;
  readonly pass: number;
  /** Blocks marked (W) for the target now: what its next snapshot commits. */
  readonly dirtyBlocks: number;
  /** Marked blocks written since the previous pass (or not yet uploaded), read and hashed now. */
  readonly checkedBlocks: number;
  readonly sentBlocks: number;
  /** Checked blocks the repository had already (or that repeated another block). */
  readonly dedupedBlocks: number;
  readonly blockBytesSent: number;
  /** Marked blocks not known to be in the repository after this pass (written meanwhile, or the pass failed). */
  readonly pendingBlocks: number;
  readonly seconds: number;
  /** Why the pass stopped early (the repository unreachable, …): retried at the next pass. */
  readonly error?: string;
}

/** What a replicator did for one target over its life. */
export interface ReplicationTotals {
  readonly target: string;
  readonly uri: string;
  readonly passes: number;
  readonly failedPasses: number;
  readonly sentBlocks: number;
  readonly dedupedBlocks: number;
  readonly blockBytesSent: number;
  readonly wireBytes: number;
  /** Marked blocks at the end, and of those the ones not known to be in the repository. */
  readonly dirtyBlocks: number;
  readonly pendingBlocks: number;
  readonly lastError?: string;
}

interface TargetState {
  readonly spec: ReplicatorTarget;
  readonly index: number;
  /** Blocks to (re)read at the next pass: written since they were read, or never read. */
  readonly touched: Bitset;
  /** Per block the digest last uploaded (or found present), valid where `known` is set. */
  readonly uploaded: Buffer;
  readonly known: Bitset;
  passes: number;
  failedPasses: number;
  sentBlocks: number;
  dedupedBlocks: number;
  blockBytesSent: number;
  lastError?: string;
}

const DEFAULT_BATCH_BYTES = 4 * 1024 * 1024;

export class Replicator {
  private readonly states: TargetState[];
  private readonly stopping = new AbortController();
  private readonly unwatch: () => void;
  private readonly log: (line: string) => void;
  private running: Promise<void> | undefined;
  private rateStartedAt = performance.now();
  private rateBytes = 0;
  private wake: (() => void) | undefined;

  constructor(private readonly options: ReplicatorOptions) {
    const { map } = options;
    this.log = options.log ?? (() => {});
    this.states = options.targets.map((spec) => {
      const index = map.targetIndex(spec.label);
      if (index < 0) throw new RangeError(`map ${map.path} has no target ${spec.label}`);
      return {
        spec, index, touched: map.modified[index]!.copy(), uploaded: Buffer.alloc(map.blockCount * DIGEST_BYTES), known: new Bitset(map.blockCount),
        passes: 0, failedPasses: 0, sentBlocks: 0, dedupedBlocks: 0, blockBytesSent: 0,
      };
    });
    this.unwatch = options.watchWrites((first, last) => {
      for (const state of this.states) state.touched.setRange(first, last - first + 1);
    });
  }

  /** Starts the rounds of passes (the first at once). */
  start(): void {
    this.running ??= this.loop();
  }

  /** Stops after the batch in flight (its upload completes); then the totals. */
  async stop(): Promise<ReplicationTotals[]> {
    this.stopping.abort();
    this.wake?.();
    await this.running;
    this.unwatch();
    return this.totals();
  }

  totals(): ReplicationTotals[] {
    return this.states.map((state) => {
      const wire = state.spec.target.wire();
      return {
        target: state.spec.label, uri: state.spec.uri, passes: state.passes, failedPasses: state.failedPasses,
        sentBlocks: state.sentBlocks, dedupedBlocks: state.dedupedBlocks, blockBytesSent: state.blockBytesSent,
        wireBytes: wire.bytesSent + wire.bytesReceived,
        dirtyBlocks: this.options.map.modified[state.index]!.count(), pendingBlocks: this.pendingOf(state),
        ...(state.lastError !== undefined ? { lastError: state.lastError } : {}),
      };
    });
  }

  private async loop(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      await this.round();
      if (this.stopping.signal.aborted) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, this.options.intervalMs);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.wake = done;
      });
      this.wake = undefined;
    }
  }

  private async round(): Promise<ReplicationPass[]> {
    const passes: ReplicationPass[] = [];
    for (const state of this.states) {
      if (this.stopping.signal.aborted) break;
      const pass = await this.pass(state);
      passes.push(pass);
      this.options.onPass?.(pass);
    }
    return passes;
  }

  /** Marked blocks whose uploaded digest is not known current. */
  private pendingOf(state: TargetState): number {
    const marked = this.options.map.modified[state.index]!;
    let pending = 0;
    for (let b = marked.nextSet(0); b >= 0; b = marked.nextSet(b + 1)) {
      if (state.touched.get(b) || (!state.known.get(b) && this.options.map.isPresent(b))) pending++;
    }
    return pending;
  }

  private async pass(state: TargetState): Promise<ReplicationPass> {
    const started = performance.now();
    const { map, local } = this.options;
    const { size, blockSize } = map.header;
    const marked = map.modified[state.index]!;
    // Take the touched marked blocks: a write from now on touches them again.
    const candidates = state.touched.copy();
    state.touched.clearWhere(candidates);
    const counts = { checkedBlocks: 0, sentBlocks: 0, dedupedBlocks: 0, blockBytesSent: 0 };
    const batchBlocks = Math.max(1, Math.floor(this.batchBytes() / blockSize));
    let error: string | undefined;
    let next = candidates.nextSet(0);
    /** The first block of the batch under way: from it on, an early end leaves the blocks touched. */
    let resumeAt = next;
    try {
      while (next >= 0 && !this.stopping.signal.aborted) {
        resumeAt = next;
        // Present marked blocks only: an absent one still holds the image's content.
        const batch: number[] = [];
        for (; next >= 0 && batch.length < batchBlocks; next = candidates.nextSet(next + 1)) {
          if (marked.get(next) && map.isPresent(next)) batch.push(next);
        }
        counts.checkedBlocks += batch.length;
        const { offered, repeats } = await readAndHashBlocks(local, batch, { size, blockSize }, new Set(), {
          onZero: (index) => {
            // A zero block is never stored: nothing to upload.
            ZERO_DIGEST.copy(state.uploaded, index * DIGEST_BYTES);
            state.known.set(index);
          },
          onDigest: (index, digest) => {
            const at = index * DIGEST_BYTES;
            if (state.known.get(index) && state.uploaded.subarray(at, at + DIGEST_BYTES).equals(digest)) return false; // uploaded as it is
            state.known.clear(index);
            return true;
          },
        });
        counts.dedupedBlocks += repeats.length; // stored with the block each repeats
        if (offered.length > 0) {
          const lacking = await state.spec.target.missing(Buffer.concat(offered.map((block) => block.digest)));
          const sending = offered.filter((_, i) => lacking[i] === 1);
          const bytes = sending.reduce((sum, block) => sum + block.data.length, 0);
          if (bytes > 0) {
            await this.takeBudget(bytes);
            if (this.stopping.signal.aborted) break;
            await state.spec.target.putBlocks(sending);
          }
          for (const block of [...offered, ...repeats]) {
            block.digest.copy(state.uploaded, block.index * DIGEST_BYTES);
            state.known.set(block.index);
          }
          counts.sentBlocks += sending.length;
          counts.dedupedBlocks += offered.length - sending.length;
          counts.blockBytesSent += bytes;
        }
        resumeAt = -1;
      }
    } catch (failure) {
      error = (failure as Error).message;
      state.failedPasses++;
      state.lastError = error;
      this.log(`replicate to ${state.spec.uri} (${state.spec.label}): ${error}; retried in ${this.options.intervalMs / 1000} s`);
    }
    // What this pass did not finish (stopped, failed) stays for the next one.
    const from = resumeAt >= 0 ? resumeAt : next;
    for (let b = from; b >= 0; b = candidates.nextSet(b + 1)) state.touched.set(b);
    state.passes++;
    state.sentBlocks += counts.sentBlocks;
    state.dedupedBlocks += counts.dedupedBlocks;
    state.blockBytesSent += counts.blockBytesSent;
    return {
      target: state.spec.label, uri: state.spec.uri, pass: state.passes, dirtyBlocks: marked.count(), ...counts,
      pendingBlocks: this.pendingOf(state), seconds: (performance.now() - started) / 1000, ...(error !== undefined ? { error } : {}),
    };
  }

  private batchBytes(): number {
    const batch = this.options.batchBytes ?? DEFAULT_BATCH_BYTES;
    // Under a rate limit, about four uploads per second's budget keep the flow smooth.
    return this.options.rate > 0 ? Math.min(batch, Math.max(this.options.map.header.blockSize, this.options.rate / 4)) : batch;
  }

  /** Reserves `bytes` of the rate budget and sleeps until it allows them (stop cuts the wait short). */
  private async takeBudget(bytes: number): Promise<void> {
    const rate = this.options.rate;
    if (rate <= 0) return;
    const now = performance.now();
    // After an idle stretch the budget restarts: no burst of what was not used while idle.
    const owedMs = (this.rateBytes / rate) * 1000 - (now - this.rateStartedAt);
    if (owedMs < -1000) {
      this.rateStartedAt = now;
      this.rateBytes = 0;
    }
    // The bytes sent before are paid for first; these go out then (the first batch at once).
    const dueMs = (this.rateBytes / rate) * 1000 - (now - this.rateStartedAt);
    this.rateBytes += bytes;
    if (dueMs > 0) await sleep(dueMs, undefined, { signal: this.stopping.signal }).catch(() => undefined);
  }
}

/** One line for a person about a pass. */
export function describePass(pass: ReplicationPass): string {
  const head = `replicate ${pass.target} (${pass.uri}) pass ${pass.pass}`;
  if (pass.error) return `${head}: failed (${pass.error}); ${pass.pendingBlocks} blocks wait for the next pass`;
  const mib = (bytes: number): string => `${(bytes / 1048576).toFixed(bytes >= 1048576 ? 1 : 2)} MiB`;
  return `${head}: ${pass.checkedBlocks} blocks checked, ${pass.sentBlocks} sent (${mib(pass.blockBytesSent)}), ${pass.dedupedBlocks} already there; ${pass.dirtyBlocks} marked, ${pass.pendingBlocks} not yet uploaded (${pass.seconds.toFixed(2)} s)`;
}
