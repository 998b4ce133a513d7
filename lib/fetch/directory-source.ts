// A repository directory opened in-process (the embedded default: no server needed).
import type { BlockBackend } from '../block/backend.js';
import type { Manifest } from '../repo/manifest-format.js';
import { Repository } from '../repo/repository.js';
import type { RepositorySource } from './source.js';

export class DirectorySource implements RepositorySource {
  private constructor(readonly uri: string, readonly repository: Repository) {}

  static async open(dir: string): Promise<DirectorySource> {
    // Only read: a mistyped --from must be refused as "not a repository", never created empty.
    return new DirectorySource(dir, await Repository.open(dir, { create: false }));
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
