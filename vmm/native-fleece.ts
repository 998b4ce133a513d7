// QEMU's own point-in-time view of the native disk, for a live snapshot after the pivot
// (lib/snapshot/native-snapshot.ts). QEMU writes the disk itself then, so the instant is fixed by
// QEMU's machinery ("fleecing"), not re-implemented:
//   prepare(): a qcow2 overlay file in a private dir (FLEECE_NODE) whose backing is the disk's top
//     node; nothing happens to the guest yet.
//   fix(), with the guest's file systems frozen: ONE transaction: a disabled bitmap FROZEN on the
//     native node, WRITES (the guest's writes since the pivot, or since the last snapshot) merged
//     into it and cleared, and a `blockdev-backup sync=none` from the top node into the overlay:
//     its copy-before-write filter saves a cluster's old content in the overlay before the guest
//     overwrites it. Writes after the instant mark WRITES afresh, for the next snapshot.
//   exportIt(): QEMU's NBD server on a private unix socket exports the overlay (the disk as of the
//     instant, every block) with FROZEN as the `qemu:dirty-bitmap:FROZEN` meta context.
//   close(keepMarks): the export, the server, the backup job and the overlay go; FROZEN is removed,
//     merged back into WRITES first when the snapshot did not commit (no mark is lost).
// The source is the top node (the copy-on-read filter), not the qcow2 node: the fill's
// block-stream holds the qcow2 node, and QEMU 7.2 refuses a backup from it ("is busy: block
// device is in use by block job: stream"); from the filter above it both jobs run at once.
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DISK_DEVICE } from './qemu-args.js';
import { NATIVE_NODE, WRITES_BITMAP } from './native-graph.js';
import type { QmpClient, QmpEvent } from './qmp.js';

export const FROZEN_BITMAP = 'lazyboot-snapshot';
export const FLEECE_NODE = 'lazyboot-fleece';
export const FLEECE_FILTER_NODE = 'lazyboot-fleece-cbw';
export const FLEECE_JOB = 'lazyboot-fleece';
export const FLEECE_EXPORT = 'lazyboot-fleece';

/** How long teardown waits for the cancelled backup job to go. */
const JOB_GONE_MS = 10_000;

export interface FleeceExport {
  /** QEMU's NBD server: unix socket and export name (read-only). */
  readonly socketPath: string;
  readonly exportName: string;
  /** The frozen bitmap, also the export's `qemu:dirty-bitmap:` meta context. */
  readonly bitmap: string;
}

export class NativeFleece {
  #fixed = false;
  #exported = false;
  #serverStarted = false;
  #closed = false;

  private constructor(private readonly qmp: QmpClient, private readonly dir: string, private readonly overlayPath: string, private readonly blockSize: number) {}

  /**
   * The overlay file and node, before the instant. `dir` is the caller's private temp dir (it
   * removes it); `blockSize` is the writes bitmap's granularity and the overlay's cluster size.
   */
  static async prepare(qmp: QmpClient, options: { dir: string; size: number; blockSize: number }): Promise<NativeFleece> {
    // A frozen bitmap left by a teardown that failed earlier still holds marks: back into WRITES
    // first (usually there is none, and the merge answers "not found").
    const leftover = await qmp.execute('block-dirty-bitmap-merge', { node: NATIVE_NODE, target: WRITES_BITMAP, bitmaps: [FROZEN_BITMAP] }).then(() => true, () => false);
    if (leftover) await qmp.execute('block-dirty-bitmap-remove', { node: NATIVE_NODE, name: FROZEN_BITMAP });
    const top = await qmp.execute<string>('qom-get', { path: `/machine/peripheral/${DISK_DEVICE}`, property: 'drive' });
    const overlayPath = path.join(options.dir, 'fleece.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${options.blockSize}`, overlayPath, String(options.size)], { detached: true });
    const fleece = new NativeFleece(qmp, options.dir, overlayPath, options.blockSize);
    await qmp.execute('blockdev-add', {
      driver: 'qcow2', 'node-name': FLEECE_NODE, file: { driver: 'file', filename: overlayPath }, backing: top,
      // The overlay is written by the backup job only; the export reads it.
      discard: 'ignore',
    });
    fleece.#top = top;
    return fleece;
  }

  #top = '';

  /** The instant (call with the guest frozen): one transaction; resolves with its duration in ms. */
  async fix(): Promise<number> {
    const started = performance.now();
    await this.qmp.execute('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: { node: NATIVE_NODE, name: FROZEN_BITMAP, disabled: true, persistent: false, granularity: this.blockSize } },
        { type: 'block-dirty-bitmap-merge', data: { node: NATIVE_NODE, target: FROZEN_BITMAP, bitmaps: [WRITES_BITMAP] } },
        { type: 'block-dirty-bitmap-clear', data: { node: NATIVE_NODE, name: WRITES_BITMAP } },
        { type: 'blockdev-backup', data: { 'job-id': FLEECE_JOB, device: this.#top, target: FLEECE_NODE, sync: 'none', 'filter-node-name': FLEECE_FILTER_NODE, 'auto-dismiss': true } },
      ],
    });
    this.#fixed = true;
    return performance.now() - started;
  }

  /** Exports the disk as of the instant, with FROZEN, on a socket in the private dir. */
  async exportIt(): Promise<FleeceExport> {
    const socketPath = path.join(this.dir, 'fleece.sock');
    await this.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socketPath } } });
    this.#serverStarted = true;
    await this.qmp.execute('block-export-add', { type: 'nbd', id: FLEECE_EXPORT, 'node-name': FLEECE_NODE, name: FLEECE_EXPORT, writable: false, bitmaps: [FROZEN_BITMAP] });
    this.#exported = true;
    return { socketPath, exportName: FLEECE_EXPORT, bitmap: FROZEN_BITMAP };
  }

  /** Bytes the copy-before-write filter saved in the overlay so far (clusters the guest rewrote). */
  async copiedBytes(): Promise<number> {
    const result = await execa('qemu-img', ['map', '--output=json', '-U', '-f', 'qcow2', this.overlayPath], { detached: true, reject: false });
    if (result.exitCode !== 0) return 0;
    return (JSON.parse(result.stdout) as Array<{ length: number; depth: number; present: boolean }>)
      .filter((entry) => entry.present && entry.depth === 0).reduce((sum, entry) => sum + entry.length, 0);
  }

  /**
   * Tears everything down, each step tried whatever the others did. `keepMarks`: the snapshot did
   * not commit, so FROZEN goes back into WRITES. Rejects with the first failure (after all steps).
   */
  async close(keepMarks: boolean): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const failures: Error[] = [];
    const attempt = async (run: () => Promise<unknown>): Promise<void> => {
      try {
        await run();
      } catch (error) {
        failures.push(error as Error);
      }
    };
    const qmp = this.qmp;
    if (!qmp.closed) {
      if (this.#exported) await attempt(() => qmp.execute('block-export-del', { id: FLEECE_EXPORT, mode: 'hard' }));
      if (this.#serverStarted) await attempt(() => qmp.execute('nbd-server-stop'));
      if (this.#fixed) await attempt(() => this.#cancelJob());
      if (this.#exported) await attempt(() => this.#exportGone());
      await attempt(() => qmp.execute('blockdev-del', { 'node-name': FLEECE_NODE }));
      if (this.#fixed) {
        if (keepMarks) await attempt(() => qmp.execute('block-dirty-bitmap-merge', { node: NATIVE_NODE, target: WRITES_BITMAP, bitmaps: [FROZEN_BITMAP] }));
        // A failed merge keeps FROZEN: it still holds the marks (and the next snapshot says it is there).
        if (!keepMarks || failures.length === 0) await attempt(() => qmp.execute('block-dirty-bitmap-remove', { node: NATIVE_NODE, name: FROZEN_BITMAP }));
      }
    } else if (this.#fixed) {
      failures.push(new Error(`QEMU went away (${keepMarks ? 'the frozen marks are in the map' : 'nothing to undo'})`));
    }
    await rm(this.overlayPath, { force: true });
    if (failures.length > 0) throw failures[0];
  }

  /** block-job-cancel, then wait until the job has gone (the overlay cannot be deleted before). */
  async #cancelJob(): Promise<void> {
    const gone = this.#waitFor((event) => (event.event === 'BLOCK_JOB_CANCELLED' || event.event === 'BLOCK_JOB_COMPLETED') && event.data.device === FLEECE_JOB, async () => {
      const jobs = await this.qmp.execute<Array<{ device: string }>>('query-block-jobs');
      return !jobs.some((job) => job.device === FLEECE_JOB);
    });
    await this.qmp.execute('block-job-cancel', { device: FLEECE_JOB, force: true }).catch(async (error: Error) => {
      // Already gone (e.g. it failed on its own): fine; anything else is a real failure.
      const jobs = await this.qmp.execute<Array<{ device: string }>>('query-block-jobs');
      if (jobs.some((job) => job.device === FLEECE_JOB)) throw error;
    });
    await gone;
  }

  /** block-export-del returns before the export has let go of its node: wait for BLOCK_EXPORT_DELETED. */
  async #exportGone(): Promise<void> {
    await this.#waitFor((event) => event.event === 'BLOCK_EXPORT_DELETED' && event.data.id === FLEECE_EXPORT, async () => {
      const exports = await this.qmp.execute<Array<{ id: string }>>('query-block-exports');
      return !exports.some((entry) => entry.id === FLEECE_EXPORT);
    });
  }

  /** Resolves on the event, or once `isDone` says so (polled), or rejects after JOB_GONE_MS. */
  #waitFor(matches: (event: QmpEvent) => boolean, isDone: () => Promise<boolean>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let finished = false;
      const finish = (error?: Error): void => {
        if (finished) return;
        finished = true;
        unsubscribe();
        clearInterval(poll);
        clearTimeout(limit);
        if (error) reject(error);
        else resolve();
      };
      const unsubscribe = this.qmp.onEvent((event) => {
        if (matches(event)) finish();
      });
      const poll = setInterval(() => void isDone().then((done) => done && finish(), (error: Error) => finish(error)), 100);
      const limit = setTimeout(() => finish(new Error(`QEMU did not release the snapshot's ${FLEECE_NODE} within ${JOB_GONE_MS / 1000} s`)), JOB_GONE_MS);
    });
  }
}
