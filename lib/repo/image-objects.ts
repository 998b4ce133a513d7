// Named objects attached to an image version (a boot trace, …), kept beside the repository's
// manifests:  objects/NAME/N/KIND/ID  (ID: the write session that committed it). An object is
// created atomically and only once (a retried commit of the same session finds it); the repository
// never looks inside one: the reader of a kind checks its own format and refuses what is damaged.
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileDurably, fsyncDirectory } from './durable-file.js';
import { DIR_MODE } from './modes.js';
import { formatImageRef, isValidImageName } from './image-name.js';
import { MalformedWriteRequest } from './errors.js';
import { SESSION_ID_PATTERN } from './write-target.js';

/** Kinds are short lowercase words: they are directory names and route segments. */
export const OBJECT_KIND_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;
/** Objects are small metadata that travel whole with their commit. */
export const MAX_OBJECT_BYTES = 4 * 1024 * 1024;
/** A version directory's name under objects/NAME/. */
export const VERSION_PATTERN = /^[1-9][0-9]{0,8}$/;

export interface StoredObject {
  /** `NAME@N`. */
  readonly image: string;
  readonly kind: string;
  readonly id: string;
  readonly bytes: number;
  /** When it was committed (ms since epoch). */
  readonly created: number;
}

export interface ImageVersion {
  readonly name: string;
  readonly version: number;
}

export function checkObjectKind(kind: string): string {
  if (!OBJECT_KIND_PATTERN.test(kind)) throw new MalformedWriteRequest(`object kind ${JSON.stringify(kind)} (lowercase letters, digits and "-")`);
  return kind;
}

export function checkObjectId(id: string): string {
  if (!SESSION_ID_PATTERN.test(id)) throw new MalformedWriteRequest(`object id ${JSON.stringify(id)} (8 to 64 letters, digits, "-", "_")`);
  return id;
}

export class ImageObjects {
  constructor(private readonly repositoryDir: string) {}

  private kindDir(image: ImageVersion, kind: string): string {
    return join(this.repositoryDir, 'objects', image.name, String(image.version), checkObjectKind(kind));
  }

  /** The objects of this kind of one image version, or of every version; oldest first. */
  async list(kind: string, image?: ImageVersion): Promise<StoredObject[]> {
    const versions = image ? [image] : await this.versionsWith(kind);
    const found: StoredObject[] = [];
    for (const version of versions) {
      const dir = this.kindDir(version, kind);
      for (const id of await namesIn(dir)) {
        if (!SESSION_ID_PATTERN.test(id)) continue; // temp files start with a dot
        const info = await stat(join(dir, id)).catch(() => undefined);
        if (info?.isFile()) found.push({ image: formatImageRef(version.name, version.version), kind, id, bytes: info.size, created: info.mtimeMs });
      }
    }
    return found.sort((a, b) => a.created - b.created || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Image versions that hold at least a directory for objects of this kind. */
  private async versionsWith(kind: string): Promise<ImageVersion[]> {
    const versions: ImageVersion[] = [];
    for (const name of (await namesIn(join(this.repositoryDir, 'objects'))).filter(isValidImageName).sort()) {
      for (const version of (await namesIn(join(this.repositoryDir, 'objects', name))).filter((v) => VERSION_PATTERN.test(v))) {
        if ((await namesIn(join(this.repositoryDir, 'objects', name, version, kind))).length > 0) versions.push({ name, version: Number(version) });
      }
    }
    return versions.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version - b.version));
  }

  async read(image: ImageVersion, kind: string, id: string): Promise<Buffer | undefined> {
    try {
      return await readFile(join(this.kindDir(image, kind), checkObjectId(id)));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  /** Creates the object atomically; false when one of this id exists already (it is left as it is). */
  async create(image: ImageVersion, kind: string, id: string, data: Buffer): Promise<boolean> {
    checkObjectId(id);
    if (data.length > MAX_OBJECT_BYTES) throw new MalformedWriteRequest(`an object of ${data.length} bytes (at most ${MAX_OBJECT_BYTES})`);
    const dir = this.kindDir(image, kind);
    // Each new directory is made durable in its parent before the object lands in it.
    let parent = this.repositoryDir;
    for (const part of ['objects', image.name, String(image.version), kind]) {
      const child = join(parent, part);
      const made = await mkdir(child, { mode: DIR_MODE }).then(() => true, (error: NodeJS.ErrnoException) => {
        if (error.code === 'EEXIST') return false;
        throw error;
      });
      if (made) await fsyncDirectory(parent);
      parent = child;
    }
    return createFileDurably(join(dir, id), data);
  }

  /** Removes the objects of this kind of the version (all, or those named); returns how many. */
  async remove(image: ImageVersion, kind: string, ids?: readonly string[]): Promise<number> {
    const dir = this.kindDir(image, kind);
    const names = ids ?? (await namesIn(dir)).filter((id) => SESSION_ID_PATTERN.test(id));
    let removed = 0;
    for (const id of names) {
      const gone = await rm(join(dir, checkObjectId(id))).then(() => true, (error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return false;
        throw error;
      });
      if (gone) removed++;
    }
    if (removed > 0) await fsyncDirectory(dir);
    return removed;
  }
}

async function namesIn(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw error;
  }
}
