// Boot traces kept in the image repository: each recorded boot is an object of kind `trace`
// attached to its image version (lib/repo/image-objects.ts), committed through the repository's
// write path (a directory in-process, or `repo serve --write-socket`), at most MAX_RECORDINGS per
// version. Recordings from every host meet there and are merged when read (trace-merge.ts), by
// whoever reads them: a client that can reach the write path (or the directory) reads them all,
// and `repo serve` merges them for the `trace:NAME@N` NBD export that a read-only client gets
// (so one repository URI still suffices). A recording that does not match is left out with one
// log line; a reader never changes the repository.
import { createHash } from 'node:crypto';
import type { Repository } from '../repo/repository.js';
import { RepositoryWriter } from '../repo/repository-writer.js';
import type { WriteTarget } from '../repo/write-target.js';
import { UnknownImage } from '../repo/errors.js';
import { formatImageRef } from '../repo/image-name.js';
import { decodeTrace, encodeTrace, type BootTrace } from './trace-format.js';
import { mergeTraces } from './trace-merge.js';
import { MAX_RECORDINGS, summaryOf, type LoadedTrace, type StoredTraceSummary } from './trace-store.js';
import { TraceRefused } from './errors.js';

export const TRACE_OBJECT_KIND = 'trace';
/** The NBD export of `repo serve` that carries the merged trace of NAME@N (like `manifest:REF`). */
export const TRACE_EXPORT_PREFIX = 'trace:';

type TraceReader = Pick<WriteTarget, 'uri' | 'listObjects' | 'readObject'>;

/** The recordings of `imageRef` (NAME@N) in the repository, merged; undefined when none is usable. */
export async function loadRepositoryTrace(reader: TraceReader, imageRef: string, manifestDigest: string, log: (line: string) => void): Promise<LoadedTrace | undefined> {
  const objects = (await reader.listObjects(TRACE_OBJECT_KIND, imageRef)).slice(-MAX_RECORDINGS);
  const recordings: BootTrace[] = [];
  for (const object of objects) {
    const bytes = await reader.readObject(imageRef, TRACE_OBJECT_KIND, object.id);
    if (!bytes) continue; // removed since the listing
    try {
      recordings.push(decodeTrace(bytes, manifestDigest));
    } catch (error) {
      if (!(error instanceof TraceRefused)) throw error;
      log(`boot trace ${object.id} of ${imageRef} in ${reader.uri} refused (${error.reason}); left out, the boot goes on without it`);
    }
  }
  return recordings.length === 0 ? undefined : { trace: mergeTraces(recordings), recordings: recordings.length };
}

/**
 * What `repo serve` answers for the export `trace:REF`: the merged trace of the version REF names,
 * or undefined (no such export) when the image or its trace does not exist.
 */
export async function servedTraceBytes(repo: Repository, ref: string, log: (line: string) => void): Promise<Buffer | undefined> {
  let imageRef: string;
  let manifestDigest: string;
  try {
    const manifest = await repo.resolve(ref);
    imageRef = formatImageRef(manifest.name, manifest.version);
    manifestDigest = createHash('sha256').update(await repo.manifestBytes(imageRef)).digest('hex');
  } catch (error) {
    if (error instanceof UnknownImage) return undefined;
    throw error;
  }
  const loaded = await loadRepositoryTrace(new RepositoryWriter(repo), imageRef, manifestDigest, log);
  return loaded && encodeTrace(loaded.trace);
}

/** Every image version with a usable trace in the repository (for `image trace ls --repo`). */
export async function listRepositoryTraces(target: WriteTarget, log: (line: string) => void): Promise<StoredTraceSummary[]> {
  const images = [...new Set((await target.listObjects(TRACE_OBJECT_KIND)).map((object) => object.image))];
  const summaries: StoredTraceSummary[] = [];
  for (const image of images) {
    const manifest = await target.manifest(image);
    if (!manifest) continue; // the version is gone; its objects are left for `image trace rm`
    const loaded = await loadRepositoryTrace(target, image, createHash('sha256').update(manifest).digest('hex'), log);
    if (loaded) summaries.push(summaryOf(loaded));
  }
  return summaries;
}
