// Reusable shared-memory buffers for fetched runs. A cold read fetches hundreds of MiB; a fresh
// SharedArrayBuffer per fetch costs a page fault per 4 KiB (the kernel zeroes each page), and a
// fetched buffer that is dropped stays resident until V8's next full GC, which external memory
// barely hastens (a cold read measured 200-400 MiB of RSS, mostly dropped fetch buffers). So
// buffers are recycled, in power-of-two size classes.
//
// Ownership: acquireShared hands out one hold; retainShared adds one for another user of the same
// memory (a fetch-ahead run taken by a guest read); releaseShared drops one. The memory returns to
// the pool when the last hold is dropped, so release only once every read into or from the buffer
// has completed and nothing refers to it any more (see CorBackend.fetchData, FetchAhead). A buffer
// whose holds are never all dropped is simply garbage-collected: forgetting a release is safe,
// releasing twice is not.
//
// Fetched bytes are copied in from a socket and out to the local disk's pages: each buffer starts
// COPY_SHIFT_BYTES past the page boundary, which keeps those copies at full speed (copy-buffer.ts).
import { COPY_SHIFT_BYTES } from '../base/copy-buffer.js';

const SMALLEST_POOLED = 16 * 1024;
/** 8 MiB: a fetch-ahead run and a coalesced run with zero gaps read along can pass 4 MiB. */
const LARGEST_POOLED = 8 * 1024 * 1024;
/** Idle memory kept for reuse (8 fetches of 4 MiB in flight by default). */
const MAX_FREE_BYTES = 32 * 1024 * 1024;
/** Idle free buffers are given back after this long, so an idle device stays small. */
const RELEASE_IDLE_MS = 2_000;

const free = new Map<number, SharedArrayBuffer[]>();
let freeBytes = 0;
/** Pooled memory handed out → holds not yet released. */
const holds = new WeakMap<SharedArrayBuffer, number>();
/** Memory lent by another thread (adoptShared): given back to it, not pooled here. */
const owners = new WeakMap<SharedArrayBuffer, (memory: SharedArrayBuffer) => void>();
let idleTimer: NodeJS.Timeout | undefined;

/** A buffer of `length` bytes in shared memory (contents undefined), with one hold. */
export function acquireShared(length: number): Buffer {
  if (length > LARGEST_POOLED) return Buffer.from(new SharedArrayBuffer(length + COPY_SHIFT_BYTES), COPY_SHIFT_BYTES, length);
  const size = sizeClass(length);
  let memory = free.get(size)?.pop();
  if (memory) freeBytes -= memory.byteLength;
  else memory = new SharedArrayBuffer(size + COPY_SHIFT_BYTES);
  holds.set(memory, 1);
  return Buffer.from(memory, COPY_SHIFT_BYTES, length);
}

/**
 * Takes shared memory lent by another thread (the fetch worker) as if acquired here: one hold,
 * and `giveBack` runs when the last hold is released instead of pooling it in this thread.
 */
export function adoptShared(buffer: Buffer, giveBack: (memory: SharedArrayBuffer) => void): Buffer {
  const memory = buffer.buffer as SharedArrayBuffer;
  holds.set(memory, 1);
  owners.set(memory, giveBack);
  return buffer;
}

/** Another hold on the memory of `buffer` (any view of it); no-op for memory not from the pool. */
export function retainShared(buffer: Buffer): void {
  const memory = buffer.buffer;
  const count = memory instanceof SharedArrayBuffer ? holds.get(memory) : undefined;
  if (count !== undefined) holds.set(memory as SharedArrayBuffer, count + 1);
}

/** Drops one hold on the memory of `buffer` (any view of it); the last one returns it to the pool. */
export function releaseShared(buffer: Buffer): void {
  const memory = buffer.buffer;
  if (!(memory instanceof SharedArrayBuffer)) return;
  const count = holds.get(memory);
  if (count === undefined) return;
  if (count > 1) {
    holds.set(memory, count - 1);
    return;
  }
  holds.delete(memory);
  const giveBack = owners.get(memory);
  if (giveBack) {
    owners.delete(memory);
    giveBack(memory);
    return;
  }
  if (freeBytes + memory.byteLength > MAX_FREE_BYTES) return;
  const size = memory.byteLength - COPY_SHIFT_BYTES;
  let list = free.get(size);
  if (!list) free.set(size, (list = []));
  list.push(memory);
  freeBytes += memory.byteLength;
  idleTimer ??= setTimeout(() => { idleTimer = undefined; free.clear(); freeBytes = 0; }, RELEASE_IDLE_MS).unref();
  idleTimer.refresh();
}

function sizeClass(length: number): number {
  let size = SMALLEST_POOLED;
  while (size < length) size *= 2;
  return size;
}
