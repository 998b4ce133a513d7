// Where a boot's trace is read from and stored: the image repository when this client can write
// it (a repository directory or S3 bucket among --from, or the write path named by `trace.to`), else the host
// cache ($XDG_CACHE_HOME/lazyboot/traces). A boot reads the trace first from where it would store
// its own recording (so a trace it re-records is the one the next boot replays), then from the
// other places: the host cache, or the repository read-only (a directory, or the `trace:NAME@N`
// export of an NBD repository). A recording the repository refuses is kept in the host cache.
import { access, constants } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { RepositorySource } from '../fetch/source.js';
import { DirectorySource } from '../fetch/directory-source.js';
import { NbdSource } from '../fetch/nbd-source.js';
import { RepositoryWriter } from '../repo/repository-writer.js';
import { isS3Uri } from '../repo/storage/open-storage.js';
import type { WriteTarget } from '../repo/write-target.js';
import { openWriteTarget } from '../write/open-write-target.js';
import { decodeTrace, encodeTrace, type BootTrace } from './trace-format.js';
import { MAX_RECORDINGS, TraceStore, type LoadedTrace } from './trace-store.js';
import { loadRepositoryTrace, TRACE_EXPORT_PREFIX, TRACE_OBJECT_KIND } from './repository-traces.js';
import { TraceRefused } from './errors.js';

export interface TraceHome {
  /** For log lines: "the repository DIR", "the host cache DIR". */
  readonly description: string;
  /** Whether recordings can be stored here. */
  readonly writable: boolean;
  /** The (merged) trace of the image version, or undefined. Refusals are logged, one line each. */
  load(manifestDigest: string, log: (line: string) => void): Promise<LoadedTrace | undefined>;
  /** Stores a recording beside the others, or in their place (`replace`); returns where. */
  save(trace: BootTrace, replace: boolean): Promise<string>;
}

export interface TraceHomes {
  /** Where this boot's recording goes (then the host cache, should the repository refuse it). */
  readonly store: TraceHome;
  readonly hostCache: TraceHome;
  /** Where a trace is looked for, in order. */
  readonly readOrder: readonly TraceHome[];
  close(): Promise<void>;
}

export interface TraceHomeOptions {
  /** The host cache directory (default $XDG_CACHE_HOME/lazyboot/traces). */
  readonly dir?: string;
  /**
   * Where recordings are written in the repository: a repository directory, `http+unix:///?socket=…`
   * or `http://HOST:PORT` (`repo serve --write-socket/--write-listen`). Default: the first
   * repository directory among the sources that this user may write. `false`: the host cache only.
   */
  readonly to?: string | false;
  /** The endpoint of an s3:// `to` (--s3-endpoint), over AWS_ENDPOINT_URL and the shared config. */
  readonly s3Endpoint?: string;
}

class HostCacheHome implements TraceHome {
  readonly writable = true;
  readonly description: string;
  constructor(private readonly store: TraceStore) {
    this.description = `the host cache ${store.dir}`;
  }
  load(manifestDigest: string, log: (line: string) => void): Promise<LoadedTrace | undefined> {
    return this.store.load(manifestDigest, log);
  }
  save(trace: BootTrace, replace: boolean): Promise<string> {
    return replace ? this.store.replace(trace) : this.store.save(trace);
  }
}

/** The repository through its write path (or a directory opened in-process, read-only or not). */
class RepositoryHome implements TraceHome {
  readonly description: string;
  constructor(private readonly target: WriteTarget, private readonly imageRef: string, readonly writable: boolean) {
    this.description = `the repository ${target.uri}`;
  }
  load(manifestDigest: string, log: (line: string) => void): Promise<LoadedTrace | undefined> {
    return loadRepositoryTrace(this.target, this.imageRef, manifestDigest, log);
  }
  async save(trace: BootTrace, replace: boolean): Promise<string> {
    const result = await this.target.commitObject({
      image: this.imageRef, kind: TRACE_OBJECT_KIND, data: encodeTrace(trace), session: `boot-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`,
      keep: MAX_RECORDINGS, replace,
    });
    return `${this.description} (${result.image} ${result.kind} ${result.id})`;
  }
}

/** The merged trace `repo serve` exports as `trace:NAME@N`: what a client that cannot write reads. */
class ServedTraceHome implements TraceHome {
  readonly writable = false;
  readonly description: string;
  constructor(private readonly source: NbdSource, private readonly imageRef: string) {
    this.description = `the repository ${source.uri}`;
  }
  async load(manifestDigest: string, log: (line: string) => void): Promise<LoadedTrace | undefined> {
    const bytes = await this.source.exportBytes(TRACE_EXPORT_PREFIX + this.imageRef);
    if (!bytes) return undefined;
    try {
      // Merged by the server: how many boots it merged is not carried.
      return { trace: decodeTrace(bytes, manifestDigest), recordings: 1 };
    } catch (error) {
      if (!(error instanceof TraceRefused)) throw error;
      log(`boot trace of ${this.imageRef} served by ${this.source.uri} refused (${error.reason}); this boot goes on without it`);
      return undefined;
    }
  }
  save(): Promise<string> {
    return Promise.reject(new Error(`${this.source.uri} is read-only`));
  }
}

export async function openTraceHomes(sources: readonly RepositorySource[], imageRef: string, options: TraceHomeOptions, log: (line: string) => void): Promise<TraceHomes> {
  const hostCache = new HostCacheHome(new TraceStore(options.dir));
  const owned: WriteTarget[] = [];
  let writer: TraceHome | undefined;
  if (typeof options.to === 'string') {
    try {
      const target = await openWriteTarget(options.to, options);
      owned.push(target);
      writer = new RepositoryHome(target, imageRef, true);
    } catch (error) {
      log(`boot trace: cannot write to ${options.to} (${(error as Error).message}); traces are kept in ${hostCache.description}`);
    }
  }
  const readers: TraceHome[] = [];
  for (const source of sources) {
    if (source instanceof DirectorySource) {
      // A bucket is written with the client's credentials: tried, and a refusal keeps the recording in the host cache.
      const mayWrite = options.to === undefined && !writer && (isS3Uri(source.repository.dir) || (await access(source.repository.dir, constants.W_OK).then(() => true, () => false)));
      const home = new RepositoryHome(new RepositoryWriter(source.repository, source.uri), imageRef, mayWrite);
      if (mayWrite) writer = home;
      else readers.push(home);
    } else if (source instanceof NbdSource) {
      readers.push(new ServedTraceHome(source, imageRef));
    }
  }
  const store = writer ?? hostCache;
  const readOrder = store === hostCache ? [hostCache, ...readers] : [store, hostCache, ...readers];
  return {
    store, hostCache, readOrder,
    async close() {
      await Promise.allSettled(owned.map((target) => target.close()));
    },
  };
}
