// Named objects (boot traces) of a repository in an S3 bucket: not stored there yet. Listing finds
// none; storing one is refused in one line, and nothing is written (image-objects.ts works on
// directories only, until it is routed through the storage interface like the rest).
import { UsageError } from '../base/errors.js';
import { ImageObjects, type ImageVersion, type StoredObject } from './image-objects.js';

export class UnsupportedImageObjects extends ImageObjects {
  constructor(private readonly location: string) {
    super(location);
  }

  override async list(): Promise<StoredObject[]> {
    return [];
  }

  override async read(): Promise<Buffer | undefined> {
    return undefined;
  }

  override async create(image: ImageVersion, kind: string): Promise<boolean> {
    throw new UsageError(`${this.location} cannot store ${kind} objects (of ${image.name}@${image.version}) yet: it is an s3:// repository`, 'keep boot traces in a directory repository, or in the host cache');
  }

  override async remove(): Promise<number> {
    return 0;
  }
}
