// The boot trace of one device: at open, the stored trace of the image version (if any) is
// replayed ahead of the guest and the guest's first reads are recorded; at the boot's end (the
// launcher reports the guest ready) the replay stops and the recording is stored, beside the
// others of the same version (merged at the next load), or in their place when the replayed trace
// mostly missed (the guest read less than RERECORD_BELOW_SHARE of it: the boot has changed).
// Where traces live (the repository, else the host cache) is trace-homes.ts.
// A boot that never reaches its end stores nothing: a half boot would teach the next one wrong.
import type { BootTrace } from '../trace/trace-format.js';
import type { TraceHome, TraceHomes } from '../trace/trace-homes.js';
import type { CorBackend } from './cor-backend.js';
import type { TraceRecorder, TraceMilestone } from './trace-recorder.js';
import type { TraceReplay, TraceReplayCounters } from './trace-replay.js';

export interface BootTraceOptions {
  /** The host cache of traces (default $XDG_CACHE_HOME/lazyboot/traces). */
  readonly dir?: string;
  /**
   * Where recordings are written in the repository (a directory, or the write path of `repo serve`:
   * `http+unix:///?socket=…`, `http://HOST:PORT`). Default: a repository directory among the
   * sources this user may write; with none (or `false`) the host cache keeps them.
   */
  readonly to?: string | false;
  /** Record this boot's first reads (default true). */
  readonly record?: boolean;
  /** Replay the stored trace ahead of the guest (default true). */
  readonly replay?: boolean;
  /** How far the replay may run ahead of the guest, in bytes of trace (default 32 MiB). */
  readonly windowBytes?: number;
  /** Replay requests upstream at once (default 4 of the device's 8). */
  readonly maxInFlight?: number;
  /** Recording caps (defaults: 10 minutes, 16384 blocks). */
  readonly maxRecordMs?: number;
  readonly maxRecordBlocks?: number;
}

/** A replayed trace of which the guest read less than this share is recorded anew. */
export const RERECORD_BELOW_SHARE = 0.5;

export interface BootTraceStats extends TraceReplayCounters {
  /** Recordings merged into the replayed trace (0: none was replayed). */
  traceRecordings: number;
  /** Blocks recorded in this boot so far. */
  recordedBlocks: number;
}

export interface TraceOutcome {
  /** 'recorded': the first trace of this version; 'added': merged with the others at the next load; 're-recorded': replaced a trace that mostly missed. */
  readonly action: 'recorded' | 'added' | 're-recorded' | 'none';
  /** The file written, if any. */
  readonly file?: string;
  /** Of the replayed trace's blocks, the share the guest read in this boot. */
  readonly traceReadShare?: number;
}

export interface TracedImage {
  readonly manifestDigest: string;
  readonly imageRef: string;
  readonly blockSize: number;
  readonly blockCount: number;
}

export class BootTracing {
  private finishing: Promise<TraceOutcome> | undefined;

  private constructor(
    private readonly image: TracedImage,
    private readonly homes: TraceHomes,
    private readonly replayed: { readonly trace: BootTrace; readonly recordings: number; readonly replay: TraceReplay } | undefined,
    private readonly recorder: TraceRecorder | undefined,
    private readonly log: (line: string) => void,
  ) {}

  /** Starts replaying the first trace found in `homes` and recording; `homes` is closed by close(). */
  static async start(backend: CorBackend, image: TracedImage, homes: TraceHomes, options: BootTraceOptions, log: (line: string) => void): Promise<BootTracing> {
    let replayed: BootTracing['replayed'];
    if (options.replay ?? true) {
      for (const home of homes.readOrder) {
        const loaded = await home.load(image.manifestDigest, log).catch((error: Error) => {
          log(`boot trace of ${image.imageRef} not read from ${home.description} (${error.message}); this boot goes on without it`);
          return undefined;
        });
        if (!loaded) continue;
        const replay = backend.startReplay(loaded.trace, { windowBytes: options.windowBytes, maxInFlight: options.maxInFlight });
        replayed = { ...loaded, replay };
        log(`boot trace: replaying ${loaded.trace.entries.length} blocks (${mib(loaded.trace.entries.length * image.blockSize)}) recorded over ${loaded.recordings} boot(s), from ${home.description}`);
        break;
      }
    }
    const recorder = (options.record ?? true) ? backend.startRecording({ maxMs: options.maxRecordMs, maxBlocks: options.maxRecordBlocks }) : undefined;
    return new BootTracing(image, homes, replayed, recorder, log);
  }

  /** Whether a replay is still fetching ahead of the guest. */
  get replaying(): boolean {
    return this.replayed?.replay.running ?? false;
  }

  /** Notes a milestone of the boot (storage-ready; ready is `finish`). */
  milestone(name: TraceMilestone): void {
    this.recorder?.milestone(name);
  }

  stats(): BootTraceStats {
    const counters = this.replayed?.replay.counters ?? { traceBlocks: 0, traceBytes: 0, replayFetchedBytes: 0, replayReadBytes: 0, replayRequests: 0 };
    return { ...counters, traceRecordings: this.replayed?.recordings ?? 0, recordedBlocks: this.recorder?.entries.length ?? 0 };
  }

  /** The boot is up: the replay stops, the recording is stored (once; later calls get the same outcome). */
  finish(): Promise<TraceOutcome> {
    return this.finishing ??= this.storeRecording();
  }

  /** The device closes: the replay stops; a boot that did not finish stores nothing. */
  stop(): void {
    this.replayed?.replay.stop();
    this.recorder?.stop();
  }

  /** Stops, lets a recording being stored land, and closes the write path opened for it. */
  async close(): Promise<void> {
    this.stop();
    await this.finishing?.catch(() => undefined);
    await this.homes.close();
  }

  private async storeRecording(): Promise<TraceOutcome> {
    this.recorder?.milestone('ready');
    this.stop();
    const replay = this.replayed?.replay;
    if (replay) {
      const { replayFetchedBytes, replayReadBytes } = replay.counters;
      const share = replayFetchedBytes > 0 ? Math.round((100 * replayReadBytes) / replayFetchedBytes) : 100;
      this.log(`boot trace: the replay fetched ${mib(replayFetchedBytes)} ahead of the guest, which read ${mib(replayReadBytes)} of it (${share}%)`);
    }
    const recorder = this.recorder;
    if (!recorder || recorder.entries.length === 0) return { action: 'none' };
    const trace: BootTrace = {
      manifestDigest: this.image.manifestDigest,
      imageRef: this.image.imageRef,
      blockSize: this.image.blockSize,
      blockCount: this.image.blockCount,
      recordedAt: Date.now(),
      storageReadyMs: recorder.milestoneMs('storage-ready'),
      readyMs: recorder.milestoneMs('ready'),
      entries: recorder.entries,
    };
    const traceReadShare = this.replayed ? readShare(this.replayed.trace, recorder) : undefined;
    const action = !this.replayed ? 'recorded' : traceReadShare! < RERECORD_BELOW_SHARE ? 're-recorded' : 'added';
    const why = action === 're-recorded' ? ` (the guest read only ${Math.round(traceReadShare! * 100)}% of the old trace)` : '';
    const homes: TraceHome[] = this.homes.store === this.homes.hostCache ? [this.homes.store] : [this.homes.store, this.homes.hostCache];
    for (const home of homes) {
      try {
        const file = await home.save(trace, action === 're-recorded');
        this.log(`boot trace: ${action} ${trace.entries.length} blocks (${mib(trace.entries.length * trace.blockSize)})${why} in ${file}`);
        return { action, file, ...(traceReadShare !== undefined ? { traceReadShare } : {}) };
      } catch (error) {
        const next = home === this.homes.hostCache ? 'the next boot records again' : `kept in ${this.homes.hostCache.description} instead`;
        this.log(`boot trace not stored in ${home.description} (${(error as Error).message}); ${next}`);
      }
    }
    return { action: 'none', ...(traceReadShare !== undefined ? { traceReadShare } : {}) };
  }
}

/** Of the trace's blocks, the share this boot read. */
function readShare(trace: BootTrace, recorder: TraceRecorder): number {
  if (trace.entries.length === 0) return 1;
  const read = new Set(recorder.entries.map((entry) => entry.block));
  let hits = 0;
  for (const entry of trace.entries) if (read.has(entry.block)) hits++;
  return hits / trace.entries.length;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
