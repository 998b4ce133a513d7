// The copy-on-read device: opens the repositories, the local disk and its map, and serves the
// COR backend as a writable NBD export on a unix socket (for QEMU). Optionally fills in the
// background. Emits 'fetch-error' (FetchErrorEvent) so a launcher learns a repository died.
import { EventEmitter } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { startNbdServer, type ConnectionEvent, type NbdServer, type NbdServerLimits } from '../nbd/server.js';
import type { Manifest } from '../repo/manifest-format.js';
import type { CachedUpstream } from '../cache/cached-upstream.js';
import type { BlockCacheOptions } from '../cache/cache-location.js';
import type { CorBackend } from './cor-backend.js';
import { Filler, type FillProgress } from './fill.js';
import { BootTracing, type BootTraceOptions, type BootTraceStats } from './boot-tracing.js';
import { openTraceHomes } from '../trace/trace-homes.js';
import { openDisk, type OpenedDisk } from './open-disk.js';

export type { FetchErrorEvent } from '../fetch/failover.js';
export { mapPathOf, openDisk, type OpenedDisk } from './open-disk.js';

export interface CorDeviceOptions {
  image: string;            // 'name' or 'name@N'
  disk: string;             // local raw file (created sparse if missing) or block device; map at `${disk}.map`
  from: string[];           // repository URIs; empty → the default local repository directory
  /** The endpoint of s3:// repositories in `from` (default: AWS_ENDPOINT_URL, the shared AWS config). */
  s3Endpoint?: string;
  socketPath?: string;      // unix socket to serve on; default: a fresh temp path
  exportName?: string;      // default 'disk'
  fill?: boolean; fillRate?: number /* bytes/s, 0 = unlimited */;
  log?: (line: string) => void;
  /** The NBD server's connection events (default: each one a line of `log`). */
  onConnectionEvent?: (event: ConnectionEvent) => void;
  /** Per-request repository timeout in ms (default 10 000). */
  fetchTimeoutMs?: number;
  /** Largest window fetched ahead of a sequential reader (default 8 MiB; 0 = off). See fetch-ahead.ts. */
  fetchAheadBytes?: number;
  /** Background fill progress (after each fetched run, and once when done). */
  onFillProgress?: (progress: FillProgress) => void;
  /** Limits of the NBD server (see COR_SERVER_LIMITS for the defaults here). */
  serverLimits?: NbdServerLimits;
  /**
   * The host-wide block cache (lib/cache/): blocks are taken from it before any repository and
   * fetched blocks put into it for every other VM on the host. Off unless given (the CLI turns it
   * on for NBD and S3 repositories: see cacheByDefault).
   */
  cache?: BlockCacheOptions;
  /** Record this boot's first reads and replay the stored trace ahead of the guest (boot-tracing.ts). Default off here; launch() turns it on. */
  trace?: BootTraceOptions | false;
  /**
   * Runs beside the device for its whole life (the background replicator: lib/snapshot/): called
   * once the disk and map are open and before the export serves anyone; its `close` runs when the
   * device closes, after the server stopped and before the map is closed.
   */
  attach?: (opened: OpenedDisk) => Promise<DeviceAttachment>;
}

/** What `attach` started; closed with the device. */
export interface DeviceAttachment {
  close(): Promise<void>;
}

/**
 * One guest, and the process should stay small: 64 guest reads of 256 KiB in flight per
 * connection, a few connections (QEMU's, a copy tool's), and no idle timeout: QEMU keeps its one
 * connection for the guest's life and does not reconnect. For the same reason a stall closes a
 * connection only after 10 minutes (a QEMU stopped in a debugger must not lose its disk), while
 * its own budget already keeps a stuck client from delaying the guest.
 */
export const COR_SERVER_LIMITS: NbdServerLimits = { connectionBufferBytes: 16 * 1024 * 1024, maxConnections: 16, idleTimeoutMs: 0, stallTimeoutMs: 600_000 };

export interface CorStats {
  /** Upstream requests: fetchedBlocks / fetchRequests shows the coalescing. */
  fetchRequests: number;
  fetchedBytes: number; fetchedBlocks: number; presentBlocks: number;
  modifiedBlocks: number; totalBlocks: number; readRequests: number; failedFetches: number;
  /** Bytes of image data the guest needed (read, or partially overwrote), each block once. */
  demandedBytes: number;
  /** Data bytes fetched ahead of the guest, and of those the bytes it then read. */
  aheadFetchedBytes: number; aheadReadBytes: number;
  /** Blocks taken from the host-wide block cache instead of a repository (0 without the cache). */
  cacheHits: number;
  /** Milliseconds during which at least one guest read waited for a fetch (guest-wait.ts). */
  guestWaitedMs: number;
}

/** The device's stats with those of its boot trace (zeros when tracing is off). */
export interface CorDeviceStats extends CorStats, BootTraceStats {}

const NO_TRACE_STATS: BootTraceStats = { traceBlocks: 0, traceBytes: 0, traceRecordings: 0, replayFetchedBytes: 0, replayReadBytes: 0, replayRequests: 0, recordedBlocks: 0 };

export interface CorDevice extends EventEmitter {
  readonly manifest: Manifest;
  readonly socketPath: string;
  readonly exportName: string;
  /** nbd+unix:///disk?socket=... */
  readonly uri: string;
  /** Resolves when the background fill is done (undefined when fill is off). */
  readonly filled: Promise<void> | undefined;
  /** The boot trace (recording, replay), when `trace` was given. */
  readonly trace: BootTracing | undefined;
  stats(): CorDeviceStats;
  /**
   * stats() once the stores running now have landed: a fetched block is stored after its reply, so
   * a client that has just exited may be a store ahead of stats().
   */
  settledStats(): Promise<CorDeviceStats>;
  /**
   * Block b reads right from the local disk: present (its R bit), or an image zero block no one
   * wrote (a hole). For the pivot's qcow2 metadata: these clusters map to the raw disk, so guest
   * writes there after the pivot need no cluster allocation (see CorBackend.heldLocally).
   */
  heldLocally(block: number): boolean;
  /**
   * The pivot's switch (single-writer rule, read-through.ts): stops the fill, lets running fetches
   * land, commits the map, and from then on serves reads without storing and refuses writes.
   */
  enterReadThrough(): Promise<void>;
  /** Stop serving, flush data + map durably, remove the socket. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}


export function statsOf(backend: CorBackend, cached?: CachedUpstream): CorStats {
  const counts = backend.map.counts();
  return {
    ...backend.counters,
    cacheHits: cached?.counters.cacheHits ?? 0,
    ...backend.fetchAheadCounters,
    demandedBytes: backend.demandedBytes,
    guestWaitedMs: Math.round(backend.guestWaitedMs),
    presentBlocks: counts.present,
    modifiedBlocks: Math.max(0, ...counts.modified),
    totalBlocks: counts.total,
  };
}

export async function openCorDevice(options: CorDeviceOptions): Promise<CorDevice> {
  const emitter = new EventEmitter();
  const log = options.log ?? (() => {});
  const opened = await openDisk(options, (event) => { emitter.emit('fetch-error', event); });
  const exportName = options.exportName ?? 'disk';
  let tempDir: string | undefined;
  let server: NbdServer | undefined;
  let tracing: BootTracing | undefined;
  let attachment: DeviceAttachment | undefined;
  try {
    if (options.attach) attachment = await options.attach(opened);
    if (options.trace) {
      const { manifest, manifestDigest, sources } = opened.repositories;
      const imageRef = `${manifest.name}@${manifest.version}`;
      const homes = await openTraceHomes(sources, imageRef, { ...options.trace, s3Endpoint: options.s3Endpoint }, log);
      tracing = await BootTracing.start(opened.backend, { manifestDigest, imageRef, blockSize: manifest.blockSize, blockCount: manifest.blockCount }, homes, options.trace, log);
    }
    if (!options.socketPath) tempDir = await mkdtemp(join(tmpdir(), 'lazyboot-cor-'));
    const socketPath = resolvePath(options.socketPath ?? join(tempDir!, 'disk.sock'));
    const backend = opened.backend;
    server = await startNbdServer({
      socketPath,
      log,
      ...(options.onConnectionEvent ? { onConnectionEvent: options.onConnectionEvent } : {}),
      limits: { ...COR_SERVER_LIMITS, ...options.serverLimits },
      pooledBufferBytes: 16 * 1024 * 1024,
      exports: {
        async list() { return [{ name: exportName, description: `copy-on-read disk of ${backend.manifest.name}@${backend.manifest.version}` }]; },
        async open(name) { return name === exportName ? backend : undefined; },
      },
    });
    const filler = options.fill ? new Filler(backend, { rate: options.fillRate ?? 0, log, onProgress: options.onFillProgress }) : undefined;
    const filled = filler?.run();
    filled?.catch((error) => log(`fill stopped: ${(error as Error).message}`));
    const liveServer = server;
    const enterReadThrough = async () => {
      filler?.stop();
      await filled?.catch(() => undefined);
      await backend.enterReadThrough();
    };
    const stats = (): CorDeviceStats => ({ ...statsOf(backend, opened.cached), ...(tracing?.stats() ?? NO_TRACE_STATS) });
    let closing: Promise<void> | undefined;
    const close = () => closing ??= (async () => {
      try {
        tracing?.stop();
        filler?.stop();
        await filled?.catch(() => undefined);
        await liveServer.close();
      } finally {
        await tracing?.close();
        await attachment?.close().catch((error: Error) => log(error.message));
        await opened.close();
        if (tempDir) await rm(tempDir, { recursive: true, force: true });
      }
    })();
    return Object.assign(emitter, {
      manifest: backend.manifest,
      socketPath,
      exportName,
      uri: `nbd+unix:///${exportName}?socket=${socketPath}`,
      filled,
      trace: tracing,
      stats,
      settledStats: async () => { await backend.whenStoresSettled(); return stats(); },
      heldLocally: (block: number) => backend.heldLocally(block),
      enterReadThrough,
      close,
      [Symbol.asyncDispose]: close,
    });
  } catch (error) {
    await tracing?.close();
    await server?.close();
    await attachment?.close().catch(() => undefined);
    await opened.close();
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
    throw error;
  }
}
