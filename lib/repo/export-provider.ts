// NBD exports of a repository: every image version as `name@N`, the latest as `name`, and the
// encoded manifest of each as `manifest:REF` (not listed), so one repository URI gives both. A
// caller may add more such small exports by prefix (`trace:REF`: the merged boot trace, wired by
// `repo serve`), each a whole object read at once like the manifest. `manifest:REF/sha256` names
// the version REF resolves to and its manifest's digest and length in one short line, so a client
// with the manifest in its host cache need not fetch it again (lib/fetch/nbd-source.ts).
import { createHash } from 'node:crypto';
import type { BlockBackend } from '../block/backend.js';
import { ReadOnlyBufferBackend } from '../block/buffer-backend.js';
import type { ExportProvider } from '../nbd/export-provider.js';
import { InvalidImageName, UnknownImage } from './errors.js';
import { formatImageRef } from './image-name.js';
import type { Repository } from './repository.js';
import { BoundedMap } from '../base/bounded-map.js';

export const MANIFEST_EXPORT_PREFIX = 'manifest:';
/** Appended to `manifest:REF`: the export is then the line `NAME@N SHA256 LENGTH` of that manifest. */
export const MANIFEST_DIGEST_SUFFIX = '/sha256';

export interface RepositoryExportsOptions {
  /** Where a damaged repository file met while opening an export is reported (one line). */
  readonly log?: (line: string) => void;
  /**
   * Verify each block the first time it is served (default true): plain NBD clients cannot.
   * Off only to test a client's own verification against a server that sends bad bytes.
   */
  readonly verifyBlocks?: boolean;
  /**
   * More unlisted exports of one small object each, by prefix (`trace:` → the merged boot trace
   * of REF): the function gives the object's bytes, or undefined for "no such export".
   */
  readonly objectExports?: Readonly<Record<string, (ref: string) => Promise<Buffer | undefined>>>;
}

/** Blocks of the image backends kept: 16 Mi blocks (1 TiB of images in 64 KiB blocks) hold ~130 MiB of locations. */
const BACKEND_CACHE_BLOCKS = 16 * 1024 * 1024;

export function repositoryExports(repo: Repository, options: RepositoryExportsOptions = {}): ExportProvider {
  const { log, verifyBlocks = true, objectExports = {} } = options;
  // Versions are immutable, so one backend per `name@N` serves every client. Bounded (a server may
  // run for months over a bucket of many versions): a forgotten backend is rebuilt on the next
  // open; connections keep theirs. Each holds a location per block (~8 bytes) and verified bits.
  const images = new BoundedMap<string, { backend: BlockBackend; blocks: number }>(BACKEND_CACHE_BLOCKS, (image) => image.blocks + 1);
  return {
    async list() {
      const exports: Array<{ name: string; description?: string }> = [];
      for (const name of await repo.names()) {
        const versions = await repo.versions(name);
        if (versions.length === 0) continue;
        exports.push({ name, description: `latest version of ${name} (${formatImageRef(name, versions[versions.length - 1]!)})` });
        for (const version of versions) exports.push({ name: formatImageRef(name, version), description: `${name} version ${version}` });
      }
      return exports;
    },
    async open(exportName) {
      try {
        for (const [prefix, objectOf] of Object.entries(objectExports)) {
          if (!exportName.startsWith(prefix)) continue;
          const bytes = await objectOf(exportName.slice(prefix.length));
          return bytes && bytes.length > 0 ? new ReadOnlyBufferBackend(bytes) : undefined;
        }
        if (exportName.startsWith(MANIFEST_EXPORT_PREFIX)) {
          // Decoded first: a damaged manifest is an error naming its file here, not garbage for the client.
          const asked = exportName.slice(MANIFEST_EXPORT_PREFIX.length);
          const digestOnly = asked.endsWith(MANIFEST_DIGEST_SUFFIX);
          const ref = digestOnly ? asked.slice(0, -MANIFEST_DIGEST_SUFFIX.length) : asked;
          const manifest = await repo.resolve(ref);
          const exact = formatImageRef(manifest.name, manifest.version);
          const bytes = await repo.manifestBytes(exact);
          if (!digestOnly) return new ReadOnlyBufferBackend(bytes);
          return new ReadOnlyBufferBackend(Buffer.from(`${exact} ${createHash('sha256').update(bytes).digest('hex')} ${bytes.length}\n`));
        }
        const manifest = await repo.resolve(exportName);
        const key = formatImageRef(manifest.name, manifest.version);
        let image = images.get(key);
        if (!image) {
          image = { backend: repo.imageBackend(manifest, { verifyOnce: verifyBlocks }), blocks: manifest.blockCount };
          images.set(key, image);
        }
        return image.backend;
      } catch (error) {
        // Unknown or malformed names are simply "no such export"; a damaged repository is an error.
        if (error instanceof UnknownImage || error instanceof InvalidImageName) return undefined;
        log?.(`export ${JSON.stringify(exportName)} cannot be opened: ${(error as Error).message}`);
        throw error;
      }
    },
  };
}
