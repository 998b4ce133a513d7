// An optional extra a backend may offer: read into a buffer the caller owns, so that a server can
// reuse its buffers instead of allocating (and garbage-collecting) one per request.
import type { BlockBackend } from './backend.js';

export interface ReadsIntoBuffer {
  /** Fills all of `target` with the bytes at [offset, offset + target.length). */
  readInto(offset: number, target: Buffer): Promise<void>;
}

export function readsIntoBuffer(backend: BlockBackend): backend is BlockBackend & ReadsIntoBuffer {
  return typeof (backend as Partial<ReadsIntoBuffer>).readInto === 'function';
}

/** read() for a backend whose real work is readInto: one fresh buffer, filled in place. */
export async function readByFilling(reader: ReadsIntoBuffer, offset: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  await reader.readInto(offset, buffer);
  return buffer;
}
