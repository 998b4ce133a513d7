// Guest writes to the copy-on-read device (write, write zeroes, trim as zeroes): a partially
// covered absent block gets its old content first; the absent blocks written are claimed (so no
// fetch stores the image's bytes over the guest's); rule 2 of lib/map/block-map.ts holds here:
// the W-intent is durable before the data write is issued. Then the written blocks are present.
// For a point-in-time snapshot of the running disk (lib/snapshot/live-snapshot.ts) writes can be
// held at the door (hold: new writes wait, the ones under way end), and an overwrite guard runs
// before each write's data lands (copy-before-write keeps the old content of blocks not yet sent).
import type { WriteOptions } from '../block/backend.js';
import type { BlockMap } from '../map/block-map.js';
import type { BlockClaims } from './block-claims.js';
import type { ZeroBlocks } from './zero-blocks.js';

export interface GuestWriteParts {
  readonly size: number;
  readonly blockSize: number;
  readonly map: BlockMap;
  readonly claims: BlockClaims;
  readonly zeros: ZeroBlocks;
  /** Makes block `block` present with the image's content (a partial write keeps the rest of it). */
  needOldContent(block: number): Promise<void>;
  /** Blocks [first, last] are about to be overwritten (fetch ahead and the trace recorder note it). */
  overwriting(first: number, last: number): void;
  /** The write of blocks [first, last] ended (also a failed one: its bytes may have landed in part). */
  landed(first: number, last: number): void;
}

/** Runs before a write's data lands on blocks [first, last]; a promise holds the write until it settles. */
export type OverwriteGuard = (first: number, last: number) => Promise<void> | undefined;

export class GuestWrites {
  /** While set, new writes wait for it (a hold: see hold()). */
  #held: Promise<void> | undefined;
  /** Writes past the door and not yet ended. */
  #underWay = 0;
  #idle: Array<() => void> = [];
  #guard: OverwriteGuard | undefined;

  constructor(private readonly parts: GuestWriteParts) {}

  /**
   * Holds every new write at the door; resolves once the writes under way have ended (also the
   * ones waiting for old content). Call the returned release to let them in. One hold at a time.
   */
  async hold(): Promise<() => void> {
    while (this.#held) await this.#held;
    let release!: () => void;
    this.#held = new Promise<void>((resolve) => {
      release = () => {
        this.#held = undefined;
        resolve();
      };
    });
    if (this.#underWay > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
    return release;
  }

  /** Installs the overwrite guard (one at a time); returns its removal. */
  guard(guard: OverwriteGuard): () => void {
    if (this.#guard) throw new Error('an overwrite guard is installed already');
    this.#guard = guard;
    return () => {
      if (this.#guard === guard) this.#guard = undefined;
    };
  }

  /** Writes [offset, offset + length) (length > 0) by `apply`, keeping map and claims right. */
  async write(offset: number, length: number, apply: () => Promise<void>, options?: WriteOptions): Promise<void> {
    while (this.#held) await this.#held;
    this.#underWay++;
    try {
      await this.#write(offset, length, apply, options);
    } finally {
      if (--this.#underWay === 0) for (const resolve of this.#idle.splice(0)) resolve();
    }
  }

  async #write(offset: number, length: number, apply: () => Promise<void>, options?: WriteOptions): Promise<void> {
    const { blockSize, map, claims, zeros } = this.parts;
    const first = Math.floor(offset / blockSize);
    const last = Math.floor((offset + length - 1) / blockSize);
    // Partially covered absent blocks need their old content first (head / tail).
    const partial = [first, last].filter((b, i, all) => all.indexOf(b) === i && !this.coversBlock(offset, length, b));
    for (const block of partial) await this.parts.needOldContent(block);
    this.parts.overwriting(first, last);
    // Wait out fetches on the blocks we overwrite, then claim the absent ones synchronously.
    for (;;) {
      const pending = claims.firstHolder(first, last);
      if (!pending) break;
      await pending.catch(() => undefined);
    }
    const claimed: number[] = [];
    for (let b = first; b <= last; b++) if (!map.isPresent(b)) claimed.push(b);
    let done!: () => void;
    const writing = new Promise<void>((resolve) => { done = resolve; });
    for (const b of claimed) claims.claim(b, 1, writing);
    // No fetched segment overlaps [first, last] now: its blocks stay claimed until stored, and the
    // store drops it from the fresh segments before the wait above can end.
    zeros.forget(first, last - first + 1);
    try {
      // Rule 2: the W-intent is durable before the data write is issued.
      if (map.markModified(first, last - first + 1)) await map.commit();
      // The guard sees the write before its data lands (copy-before-write of a snapshot).
      const guarded = this.#guard?.(first, last);
      if (guarded) await guarded;
      await apply();
      for (const b of claimed) map.markPresent(b, 1);
    } finally {
      // Also after a failed write: its bytes may have landed in part.
      this.parts.landed(first, last);
      for (const b of claimed) claims.release(b, 1, writing);
      done();
    }
    if (options?.fua) await map.commit();
  }

  /** Whole blocks are zeroed (no fetch); partial head/tail are left alone, as TRIM allows. */
  trimmedRange(offset: number, length: number): [number, number] | undefined {
    const { blockSize, size } = this.parts;
    const start = Math.ceil(offset / blockSize) * blockSize;
    const end = offset + length >= size ? size : Math.floor((offset + length) / blockSize) * blockSize;
    return end > start ? [start, end - start] : undefined;
  }

  private coversBlock(offset: number, length: number, block: number): boolean {
    const start = block * this.parts.blockSize;
    const end = Math.min(start + this.parts.blockSize, this.parts.size);
    return offset <= start && offset + length >= end;
  }
}
