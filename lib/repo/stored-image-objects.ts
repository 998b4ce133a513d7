// Named objects of a repository in an S3 bucket (boot traces), through the storage interface:
// the same keys as the directory's files (objects/NAME/N/KIND/ID), each created with a create-only
// put (one writer per id, as in a directory), read whole, listed one level at a time. The storage
// interface carries no modification time: objects sort by id, which for the commits of boot traces
// begins with the commit time (write sessions are named `boot-TIME-RANDOM`).
import type { RepositoryStorage } from './storage/storage.js';
import { checkObjectId, checkObjectKind, ImageObjects, MAX_OBJECT_BYTES, VERSION_PATTERN, type ImageVersion, type StoredObject } from './image-objects.js';
import { formatImageRef, isValidImageName } from './image-name.js';
import { MalformedWriteRequest } from './errors.js';
import { SESSION_ID_PATTERN } from './write-target.js';

export class StoredImageObjects extends ImageObjects {
  constructor(private readonly storage: RepositoryStorage) {
    super(storage.location);
  }

  private kindKey(image: ImageVersion, kind: string): string {
    return `objects/${image.name}/${image.version}/${checkObjectKind(kind)}`;
  }

  override async list(kind: string, image?: ImageVersion): Promise<StoredObject[]> {
    const versions = image ? [image] : await this.storedVersionsWith(kind);
    const found: StoredObject[] = [];
    for (const version of versions) {
      for (const entry of await this.names(this.kindKey(version, kind))) {
        if (entry.kind !== 'file' || !SESSION_ID_PATTERN.test(entry.name)) continue;
        const data = await this.storage.get(`${this.kindKey(version, kind)}/${entry.name}`);
        if (data) found.push({ image: formatImageRef(version.name, version.version), kind, id: entry.name, bytes: data.length, created: 0 });
      }
    }
    return found.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  private async storedVersionsWith(kind: string): Promise<ImageVersion[]> {
    const versions: ImageVersion[] = [];
    for (const name of (await this.names('objects')).map((e) => e.name).filter(isValidImageName).sort()) {
      for (const version of (await this.names(`objects/${name}`)).map((e) => e.name).filter((v) => VERSION_PATTERN.test(v))) {
        if ((await this.names(`objects/${name}/${version}/${kind}`)).length > 0) versions.push({ name, version: Number(version) });
      }
    }
    return versions.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version - b.version));
  }

  override async read(image: ImageVersion, kind: string, id: string): Promise<Buffer | undefined> {
    return this.storage.get(`${this.kindKey(image, kind)}/${checkObjectId(id)}`);
  }

  override async create(image: ImageVersion, kind: string, id: string, data: Buffer): Promise<boolean> {
    checkObjectId(id);
    if (data.length > MAX_OBJECT_BYTES) throw new MalformedWriteRequest(`an object of ${data.length} bytes (at most ${MAX_OBJECT_BYTES})`);
    return this.storage.putIfAbsent(`${this.kindKey(image, kind)}/${id}`, data);
  }

  override async remove(image: ImageVersion, kind: string, ids?: readonly string[]): Promise<number> {
    const names = ids ?? (await this.names(this.kindKey(image, kind))).map((e) => e.name).filter((id) => SESSION_ID_PATTERN.test(id));
    let removed = 0;
    for (const id of names) {
      const key = `${this.kindKey(image, kind)}/${checkObjectId(id)}`;
      if ((await this.storage.get(key)) === undefined) continue;
      await this.storage.delete(key);
      removed++;
    }
    return removed;
  }

  /** The names one level below `prefix` (a bucket lists nothing where nothing is stored). */
  private async names(prefix: string) {
    return this.storage.list(prefix);
  }
}
