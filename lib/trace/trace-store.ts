// Where boot traces are kept: a directory on this host (default $XDG_CACHE_HOME/lazyboot/traces),
// one subdirectory per image version named by its manifest digest, one file per recorded boot
// (the newest MAX_RECORDINGS are kept, for at most MAX_TRACED_VERSIONS image versions). Loading merges the valid recordings (trace-merge.ts);
// a recording that is refused (corrupt, truncated, another format or image version) is removed
// with one log line, and the boot goes on with the others or without any.
// Files are written atomically (temp file, fsync, rename): a crash leaves a whole trace or none.
import { lstat, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { writeFileDurably } from '../repo/durable-file.js';
import { parseImageRef } from '../repo/image-name.js';
import { decodeTrace, encodeTrace, type BootTrace } from './trace-format.js';
import { mergeTraces } from './trace-merge.js';
import { TraceRefused } from './errors.js';

/** Recorded boots kept per image version: enough for a majority to outvote an odd boot. */
export const MAX_RECORDINGS = 5;
/** No real trace is larger (32 Mi entries: every block of a 2 TiB image at 64 KiB); a bigger file is refused unread. */
const MAX_TRACE_BYTES = 256 * 1024 * 1024;
/** Image versions with traces kept; the least recently recorded beyond this are removed. */
export const MAX_TRACED_VERSIONS = 100;
const TRACE_SUFFIX = '.trace';
const DIGEST_PATTERN = /^[0-9a-f]{64}$/;

export interface LoadedTrace {
  /** The recordings merged (or the one recording). */
  readonly trace: BootTrace;
  readonly recordings: number;
}

export interface StoredTraceSummary {
  readonly manifestDigest: string;
  readonly imageRef: string;
  readonly recordings: number;
  /** Blocks and bytes of the merged trace. */
  readonly blocks: number;
  readonly bytes: number;
  readonly lastRecordedAt: number;
  readonly storageReadyMs?: number;
  readonly readyMs?: number;
}

export class TraceStore {
  constructor(readonly dir: string = TraceStore.defaultDir()) {}

  /** `$XDG_CACHE_HOME/lazyboot/traces`, else `~/.cache/lazyboot/traces`. */
  static defaultDir(): string {
    const cacheHome = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
    return join(cacheHome, 'lazyboot', 'traces');
  }

  private versionDir(manifestDigest: string): string {
    if (!DIGEST_PATTERN.test(manifestDigest)) throw new Error(`not a manifest digest: ${manifestDigest}`);
    return join(this.dir, manifestDigest);
  }

  /** The merged trace of this image version, or undefined when none is stored (or none is usable). */
  async load(manifestDigest: string, log: (line: string) => void = () => {}): Promise<LoadedTrace | undefined> {
    const recordings = await this.recordings(manifestDigest, log);
    if (recordings.length === 0) return undefined;
    return { trace: mergeTraces(recordings), recordings: recordings.length };
  }

  /** Adds a recorded boot; the oldest beyond MAX_RECORDINGS are removed. Returns the file. */
  async save(trace: BootTrace): Promise<string> {
    const dir = this.versionDir(trace.manifestDigest);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Names sort by recording time: the oldest come first.
    const file = join(dir, `${String(Math.round(trace.recordedAt)).padStart(15, '0')}-${randomBytes(4).toString('hex')}${TRACE_SUFFIX}`);
    await writeFileDurably(file, encodeTrace(trace));
    const files = await this.files(trace.manifestDigest);
    for (const old of files.slice(0, Math.max(0, files.length - MAX_RECORDINGS))) await rm(join(dir, old), { force: true });
    await this.pruneVersions();
    return file;
  }

  /** Keeps the store bounded: the image versions recorded least recently beyond MAX_TRACED_VERSIONS go. */
  private async pruneVersions(): Promise<void> {
    const digests = (await readdir(this.dir)).filter((name) => DIGEST_PATTERN.test(name));
    if (digests.length <= MAX_TRACED_VERSIONS) return;
    const aged = await Promise.all(digests.map(async (digest) => ({ digest, mtime: (await stat(join(this.dir, digest)).catch(() => undefined))?.mtimeMs ?? 0 })));
    aged.sort((a, b) => a.mtime - b.mtime);
    for (const { digest } of aged.slice(0, aged.length - MAX_TRACED_VERSIONS)) await this.remove(digest);
  }

  /** Replaces every recording of the image version by this one (a trace that mostly missed). */
  async replace(trace: BootTrace): Promise<string> {
    const file = await this.save(trace);
    const dir = this.versionDir(trace.manifestDigest);
    for (const name of await this.files(trace.manifestDigest)) if (join(dir, name) !== file) await rm(join(dir, name), { force: true });
    return file;
  }

  /** Every image version with a usable trace. */
  async list(log: (line: string) => void = () => {}): Promise<StoredTraceSummary[]> {
    let digests: string[];
    try {
      digests = (await readdir(this.dir)).filter((name) => DIGEST_PATTERN.test(name)).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const summaries: StoredTraceSummary[] = [];
    for (const digest of digests) {
      const loaded = await this.load(digest, log);
      if (loaded) summaries.push(summaryOf(loaded));
    }
    return summaries;
  }

  /**
   * The stored traces `ref` names: `NAME@N`, a bare `NAME` (its highest version with a trace), or a
   * manifest digest (or a prefix of at least 8 hex digits).
   */
  async find(ref: string, log: (line: string) => void = () => {}): Promise<StoredTraceSummary[]> {
    return matchTraces(await this.list(log), ref);
  }

  /** Removes every recording of the image version. */
  async remove(manifestDigest: string): Promise<void> {
    await rm(this.versionDir(manifestDigest), { recursive: true, force: true });
  }

  private async files(manifestDigest: string): Promise<string[]> {
    try {
      return (await readdir(this.versionDir(manifestDigest))).filter((name) => name.endsWith(TRACE_SUFFIX) && !name.startsWith('.')).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  }

  private async recordings(manifestDigest: string, log: (line: string) => void): Promise<BootTrace[]> {
    const dir = this.versionDir(manifestDigest);
    const traces: BootTrace[] = [];
    for (const name of await this.files(manifestDigest)) {
      const file = join(dir, name);
      const info = await lstat(file).catch(() => undefined);
      if (!info) continue; // removed meanwhile
      if (!info.isFile()) {
        log(`boot trace ${file} is not a regular file: passed over (remove it)`);
        continue;
      }
      try {
        if (info.size > MAX_TRACE_BYTES) throw new TraceRefused(`${info.size} bytes, larger than any trace`);
        traces.push(decodeTrace(await readFile(file), manifestDigest));
      } catch (error) {
        if (!(error instanceof TraceRefused)) throw error;
        // It can never become valid: removed, so that the next boot records a good one.
        await rm(file, { force: true });
        log(`boot trace ${file} refused (${error.reason}): removed; this boot goes on without it`);
      }
    }
    return traces;
  }
}

/**
 * The traces `ref` names among `all`: `NAME@N`, a bare `NAME` (its highest version with a trace),
 * or a manifest digest (or a prefix of at least 8 hex digits).
 */
export function matchTraces(all: readonly StoredTraceSummary[], ref: string): StoredTraceSummary[] {
  if (/^[0-9a-f]{8,64}$/.test(ref)) {
    const byDigest = all.filter((s) => s.manifestDigest.startsWith(ref));
    if (byDigest.length > 0) return byDigest;
  }
  const parsed = parseImageRef(ref);
  const named = all.filter((s) => parseImageRef(s.imageRef).name === parsed.name);
  const version = parsed.version ?? Math.max(0, ...named.map((s) => parseImageRef(s.imageRef).version ?? 0));
  return named.filter((s) => parseImageRef(s.imageRef).version === version);
}

/** The summary `image trace ls` shows of a loaded trace. */
export function summaryOf(loaded: LoadedTrace): StoredTraceSummary {
  const { trace } = loaded;
  return {
    manifestDigest: trace.manifestDigest, imageRef: trace.imageRef, recordings: loaded.recordings,
    blocks: trace.entries.length, bytes: trace.entries.length * trace.blockSize, lastRecordedAt: trace.recordedAt,
    ...(trace.storageReadyMs !== undefined ? { storageReadyMs: trace.storageReadyMs } : {}),
    ...(trace.readyMs !== undefined ? { readyMs: trace.readyMs } : {}),
  };
}
