// Reusable shared-memory buffers for fetched runs. A cold read fetches hundreds of MiB; a fresh
// 4 MiB SharedArrayBuffer per fetch costs a page fault per 4 KiB (the kernel zeroes each page), so
// buffers are recycled. Only the final owner of a fetched buffer may release it, and only after
// every read into it has completed and nothing refers to it any more (see CorBackend.fetchData);
// a buffer that is never released is simply garbage-collected.
const CAPACITY = 4 * 1024 * 1024;
/** Free buffers kept at most (8 fetches in flight by default): 32 MiB. */
const MAX_FREE = 8;
/** Idle free buffers are given back after this long, so an idle device stays small. */
const RELEASE_IDLE_MS = 2_000;

const free: SharedArrayBuffer[] = [];
const pooled = new WeakSet<SharedArrayBuffer>();
let idleTimer: NodeJS.Timeout | undefined;

/** A buffer of `length` bytes in shared memory (contents undefined). */
export function acquireShared(length: number): Buffer {
  // Small or huge runs get memory of their own size: a pooled 4 MiB for a small run that is never
  // released (a fetch-ahead run, a failed read) would waste memory until the next GC.
  if (length > CAPACITY || length <= CAPACITY / 4) return Buffer.from(new SharedArrayBuffer(length));
  let memory = free.pop();
  if (!memory) {
    memory = new SharedArrayBuffer(CAPACITY);
    pooled.add(memory);
  }
  return Buffer.from(memory, 0, length);
}

/** Gives a buffer from acquireShared back; the caller must hold the only reference to it. */
export function releaseShared(buffer: Buffer): void {
  const memory = buffer.buffer;
  if (!(memory instanceof SharedArrayBuffer) || !pooled.has(memory) || buffer.byteOffset !== 0) return;
  if (free.length >= MAX_FREE || free.includes(memory)) return;
  free.push(memory);
  idleTimer ??= setTimeout(() => { idleTimer = undefined; free.length = 0; }, RELEASE_IDLE_MS).unref();
  idleTimer.refresh();
}
