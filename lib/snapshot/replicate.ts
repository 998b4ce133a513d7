// `replicate()`: serves a local disk as its copy-on-read export (like `disk serve`) and runs the
// background replicator beside it (replicator.ts), until stopped. `replicationAttachment()` is the
// same replicator for a device someone else opens (launch() for `boot --replicate-to`).
import { access } from 'node:fs/promises';
import { BlockMap } from '../map/block-map.js';
import { mapPathOf, openCorDevice, type DeviceAttachment, type OpenedDisk } from '../cor/device.js';
import type { BlockCacheOptions } from '../cache/cache-location.js';
import { canonicalWriteUri, openWriteTarget } from '../write/open-write-target.js';
import type { WriteTarget } from '../repo/write-target.js';
import { bindTarget } from './bind-target.js';
import { Replicator, type ReplicationPass, type ReplicationTotals, type ReplicatorTarget } from './replicator.js';
import { ReplicateNoMap, ReplicateOptionInvalid } from './errors.js';

export type { ReplicationPass, ReplicationTotals } from './replicator.js';

export const DEFAULT_REPLICATE_INTERVAL_MS = 30_000;

export interface ReplicationSettings {
  /** Write URIs: repository directories, `http+unix:///?socket=PATH`, `http://HOST:PORT`; each keeps its own W bits. */
  readonly to: readonly string[];
  /** The endpoint of s3:// targets and sources (--s3-endpoint), over AWS_ENDPOINT_URL and the shared config. */
  readonly s3Endpoint?: string;
  /** Pause between rounds of passes (default 30 s). */
  readonly intervalMs?: number;
  /** Block data per second over all targets (default 0 = unlimited). */
  readonly rate?: number;
  readonly log?: (line: string) => void;
  readonly onPass?: (pass: ReplicationPass) => void;
}

export interface ReplicateOptions extends ReplicationSettings {
  /** A local disk with its map (made by `disk serve` or `boot --disk`); this process serves it. */
  readonly disk: string;
  /** Where absent blocks are fetched from (default: the embedded default repository). */
  readonly from?: readonly string[];
  /** The unix socket of the disk's export (default: a fresh temporary path). */
  readonly socketPath?: string;
  readonly exportName?: string;
  readonly cache?: BlockCacheOptions;
  /** Aborting stops as stop() does. */
  readonly signal?: AbortSignal;
}

export interface Replication {
  /** The disk's export (`nbd+unix:///disk?socket=…`): what a VM or qemu-io writes through. */
  readonly uri: string;
  readonly socketPath: string;
  /** The image the disk came from (`NAME@N`). */
  readonly image: string;
  /** Each target's map label and URI. */
  readonly targets: ReadonlyArray<{ readonly label: string; readonly uri: string }>;
  /** Per target, what was done so far. */
  totals(): ReplicationTotals[];
  /** Resolves once stopped (by stop() or the signal), the disk closed: the totals. */
  readonly done: Promise<ReplicationTotals[]>;
  /** Stops after the upload in flight, closes the export and the disk; the totals. */
  stop(): Promise<ReplicationTotals[]>;
}

/** Checks the settings before anything opens: one clear line for each mistake. */
export function checkReplicationSettings(settings: ReplicationSettings): void {
  if (settings.to.length === 0) throw new ReplicateOptionInvalid('no target to replicate to', 'give --to URI (repeat it for several)');
  const seen = new Set<string>();
  for (const uri of settings.to) {
    const canonical = canonicalWriteUri(uri);
    if (seen.has(canonical)) throw new ReplicateOptionInvalid(`target ${uri} is given twice`, 'give each --to once');
    seen.add(canonical);
  }
  const interval = settings.intervalMs ?? DEFAULT_REPLICATE_INTERVAL_MS;
  if (!Number.isFinite(interval) || interval < 100) throw new ReplicateOptionInvalid(`replication interval of ${interval} ms is too short`, 'use at least 100ms (e.g. 30s)');
  const rate = settings.rate ?? 0;
  if (!Number.isFinite(rate) || rate < 0) throw new ReplicateOptionInvalid(`replication rate ${rate} is not a byte rate`, 'use bytes per second like 20M, or 0 for unlimited');
}

/** An `attach` for openCorDevice: binds each target in the map, then replicates while the device lives. */
export function replicationAttachment(settings: ReplicationSettings, started?: (replicator: Replicator, targets: ReplicatorTarget[]) => void): (opened: OpenedDisk) => Promise<DeviceAttachment> {
  checkReplicationSettings(settings);
  const log = settings.log ?? (() => {});
  return async (opened) => {
    const map = opened.backend.map;
    const targets: ReplicatorTarget[] = [];
    const open: WriteTarget[] = [];
    try {
      for (const uri of settings.to) {
        const target = await openWriteTarget(uri, settings);
        open.push(target);
        // Binding may add a target to the map: the export serves no one yet.
        targets.push({ label: await bindTarget(map, target, canonicalWriteUri(uri), log), uri, target });
      }
    } catch (error) {
      await Promise.all(open.map((target) => target.close()));
      throw error;
    }
    const replicator = new Replicator({
      map, local: opened.local, watchWrites: (watcher) => opened.backend.watchWrites(watcher), targets,
      intervalMs: settings.intervalMs ?? DEFAULT_REPLICATE_INTERVAL_MS, rate: settings.rate ?? 0, log, onPass: settings.onPass,
    });
    replicator.start();
    started?.(replicator, targets);
    return {
      async close() {
        try {
          await replicator.stop();
        } finally {
          await Promise.all(open.map((target) => target.close()));
        }
      },
    };
  };
}

export async function replicate(options: ReplicateOptions): Promise<Replication> {
  checkReplicationSettings(options);
  const mapPath = mapPathOf(options.disk);
  if (!(await access(mapPath).then(() => true, () => false))) throw new ReplicateNoMap(options.disk, mapPath);
  const image = await imageOfMap(mapPath);
  // Every target answers before the disk is opened: a wrong --to leaves the disk and map untouched.
  for (const uri of options.to) {
    const target = await openWriteTarget(uri, options);
    try {
      await target.manifest(image);
    } finally {
      await target.close();
    }
  }
  let replicator: Replicator | undefined;
  let targets: ReplicatorTarget[] = [];
  const device = await openCorDevice({
    image, disk: options.disk, from: [...(options.from ?? [])], socketPath: options.socketPath, exportName: options.exportName,
    log: options.log, cache: options.cache, s3Endpoint: options.s3Endpoint,
    attach: replicationAttachment(options, (started, bound) => {
      replicator = started;
      targets = bound;
    }),
  });
  let final: ReplicationTotals[] | undefined;
  let stopping: Promise<ReplicationTotals[]> | undefined;
  const stop = (): Promise<ReplicationTotals[]> => stopping ??= (async () => {
    options.signal?.removeEventListener('abort', onAbort);
    // The replicator stops before the device closes (its attachment), so its totals are final.
    await replicator!.stop();
    final = replicator!.totals();
    await device.close();
    return final;
  })();
  let settle!: (result: Promise<ReplicationTotals[]>) => void;
  const done = new Promise<ReplicationTotals[]>((resolve, reject) => {
    settle = (result) => void result.then(resolve, reject);
  });
  done.catch(() => undefined); // a caller may only await stop()
  const stopAndSettle = (): Promise<ReplicationTotals[]> => {
    const result = stop();
    settle(result);
    return result;
  };
  const onAbort = (): void => void stopAndSettle().catch(() => undefined);
  if (options.signal?.aborted) queueMicrotask(onAbort);
  else options.signal?.addEventListener('abort', onAbort, { once: true });
  return {
    uri: device.uri, socketPath: device.socketPath, image,
    targets: targets.map(({ label, uri }) => ({ label, uri })),
    totals: () => final ?? replicator!.totals(),
    done,
    stop: stopAndSettle,
  };
}

/** The image ref a disk's map was made for (read only: the map is not changed). */
async function imageOfMap(mapPath: string): Promise<string> {
  const map = await BlockMap.open(mapPath, async () => {});
  try {
    return map.header.image;
  } finally {
    await map.close();
  }
}
