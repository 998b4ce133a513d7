// A repository opened in-process, no server in between: a directory (the embedded default), or an
// s3:// bucket read straight from the store (its storage shapes the reads: see ReadShape).
import type { BlockBackend } from '../block/backend.js';
import type { Manifest } from '../repo/manifest-format.js';
import { Repository } from '../repo/repository.js';
import type { StorageOptions } from '../repo/storage/open-storage.js';
import type { RepositorySource } from './source.js';

export class DirectorySource implements RepositorySource {
  private constructor(readonly uri: string, readonly repository: Repository) {}

  /** `dir`: a directory or `s3://BUCKET/PREFIX` (its endpoint in `options` or the environment). */
  static async open(dir: string, options: StorageOptions = {}): Promise<DirectorySource> {
    // Only read: a mistyped --from must be refused as "not a repository", never created empty.
    return new DirectorySource(dir, await Repository.open(dir, { ...options, create: false }));
  }

  manifestBytes(ref: string): Promise<Buffer> {
    return this.repository.manifestBytes(ref);
  }

  imageReader(manifest: Manifest): BlockBackend {
    // The fetcher verifies every block itself, so the repository need not hash again.
    return this.repository.imageBackend(manifest, { verify: false });
  }

  async close(): Promise<void> {
    await this.repository.close();
  }
}
