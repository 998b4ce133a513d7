// Writes an image version to a raw file: verified block by block into a temp file beside the
// destination, which replaces it only once everything is written and synced. A corrupt block,
// a full disk or Ctrl-C leaves the old destination as it was and no temp file behind.
import { open, rename, stat, unlink } from 'node:fs/promises';
import { unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { registerCleanup } from '../base/cleanup.js';
import { LazybootError } from '../base/errors.js';
import { ExportFailed, RepositoryCorrupt } from './errors.js';
import { fsyncDirectory } from './durable-file.js';
import type { Manifest } from './manifest-format.js';
import type { Repository } from './repository.js';

/** Reads of whole blocks (so each is verified), about 4 MiB each. */
function chunkBytes(blockSize: number): number {
  return Math.max(blockSize, 4 * 1024 * 1024 - ((4 * 1024 * 1024) % blockSize));
}

/** A regular file (or nothing) can be replaced by rename; a device or directory cannot. */
async function checkDestination(file: string): Promise<void> {
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw new ExportFailed(`cannot use ${file} as the destination (${error.code ?? error.message})`, 'check the path');
  });
  if (info && !info.isFile()) {
    throw new ExportFailed(`${file} is not a regular file`, 'export writes a raw file; to write a device, serve the repository and use qemu-img convert or nbdcopy');
  }
}

export async function exportImageToFile(repo: Repository, manifest: Manifest, file: string, onProgress?: (bytesDone: number) => void): Promise<void> {
  await checkDestination(file);
  const backend = repo.imageBackend(manifest, { verify: true });
  const temp = join(dirname(file), `.${basename(file)}.lazyboot-export-${process.pid}-${randomBytes(4).toString('hex')}`);
  const out = await open(temp, 'wx', 0o600).catch((error: NodeJS.ErrnoException) => {
    throw new ExportFailed(`cannot create a file beside ${file} (${error.code ?? error.message})`, 'export into a directory you can write to');
  });
  // Ctrl-C or SIGTERM while writing: the cleanup registry removes the temp file before exiting.
  const unregister = registerCleanup({ release: async () => void (await unlink(temp).catch(() => {})), releaseSync: () => unlinkQuietly(temp) });
  try {
    try {
      await out.truncate(manifest.size);
      const chunk = chunkBytes(manifest.blockSize);
      for (let offset = 0; offset < manifest.size; offset += chunk) {
        const length = Math.min(chunk, manifest.size - offset);
        // Block status may describe only the first extents of a range (the image backend stops
        // after 32): ask again from where its answer ended until the chunk is covered.
        for (let at = offset; at < offset + length;) {
          const extents = await backend.blockStatus(at, offset + length - at);
          for (const extent of extents) {
            if (extent.zero) continue; // zero runs stay sparse
            const data = await backend.read(extent.offset, extent.length).catch((error: Error & { cause?: unknown }) => {
              throw error.cause instanceof LazybootError ? error.cause : new RepositoryCorrupt(repo.dir, `cannot be read: ${error.message}`);
            });
            await out.write(data, 0, data.length, extent.offset);
          }
          const last = extents[extents.length - 1];
          if (!last) throw new RepositoryCorrupt(repo.dir, `gave no block status at offset ${at}`);
          at = last.offset + last.length;
        }
        onProgress?.(offset + length);
      }
      await out.sync();
    } finally {
      await out.close();
    }
    await rename(temp, file);
    await fsyncDirectory(dirname(file));
  } catch (error) {
    await unlink(temp).catch(() => {});
    if (error instanceof LazybootError) throw error;
    throw new ExportFailed(`cannot write ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, 'check the free space and permissions; the old file, if any, is unchanged');
  } finally {
    unregister();
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
