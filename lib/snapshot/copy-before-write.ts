// Copy-before-write for a live snapshot (live-snapshot.ts): the running disk as it was at the
// snapshot's instant, for the blocks of its fixed set. Installed as the COR device's overwrite
// guard (CorBackend.guardOverwrites): a guest write to a block of the set that the snapshot has not
// read yet first saves the block's old content, then lands. The snapshot reads through read(),
// which gives the saved content where there is some, and lets go of each block it has read (later
// writes land without a copy). So a block is copied at most once, and only when the guest rewrites
// it before it was sent; what is saved lives in memory until it is read.
//
// Why it is exact: a write to a pending block lands only after its copy was read, and every writer
// of that block waits for the same copy. A read for sending that completed while no copy had
// started saw no write of the block since the instant (a write would have started one).
import type { Bitset } from '../map/bitset.js';
import type { LocalDisk } from '../cor/local-disk.js';

export interface CopyBeforeWriteStats {
  /** Blocks the guest rewrote before they were sent, whose old content was copied. */
  readonly copiedBlocks: number;
  /** Bytes copied (held in memory until sent), and the most held at once. */
  readonly copiedBytes: number;
  readonly peakHeldBytes: number;
}

export class CopyBeforeWrite {
  /** Blocks of the set not yet read for sending: a write to one of them copies it first. */
  readonly #pending: Bitset;
  readonly #saved = new Map<number, Buffer>();
  readonly #copying = new Map<number, Promise<void>>();
  #copiedBlocks = 0;
  #copiedBytes = 0;
  #heldBytes = 0;
  #peakHeldBytes = 0;
  /** A copy that failed: the snapshot cannot vouch for the instant any more. */
  #failure: Error | undefined;

  constructor(private readonly local: LocalDisk, private readonly blockSize: number, fixedSet: Bitset) {
    this.#pending = fixedSet.copy();
  }

  /** The overwrite guard: copies the pending blocks among [first, last] before the write lands. Never rejects. */
  readonly guard = (first: number, last: number): Promise<void> | undefined => {
    let waits: Array<Promise<void>> | undefined;
    for (let block = this.#pending.nextSet(first); block >= 0 && block <= last; block = this.#pending.nextSet(block + 1)) {
      if (this.#saved.has(block)) continue;
      let copying = this.#copying.get(block);
      if (!copying) {
        copying = this.#copy(block);
        this.#copying.set(block, copying);
      }
      (waits ??= []).push(copying);
    }
    return waits ? Promise.all(waits).then(() => undefined) : undefined;
  };

  /** Blocks [first, first + count) as of the instant (all in the fixed set); lets go of them. */
  async read(first: number, count: number): Promise<Buffer> {
    const start = first * this.blockSize;
    const data = await this.local.read(start, Math.min(count * this.blockSize, this.local.size - start));
    // Copies under way finish first: their blocks' data may have been overwritten under our read.
    for (let block = first; block < first + count; block++) await this.#copying.get(block);
    if (this.#failure) throw this.#failure;
    for (let block = first; block < first + count; block++) {
      const saved = this.#saved.get(block);
      if (saved) {
        saved.copy(data, (block - first) * this.blockSize);
        this.#saved.delete(block);
        this.#heldBytes -= saved.length;
      }
      // A copy started after the awaits above is of a block no write has reached yet: our read stands.
      this.#pending.clear(block);
    }
    return data;
  }

  get stats(): CopyBeforeWriteStats {
    return { copiedBlocks: this.#copiedBlocks, copiedBytes: this.#copiedBytes, peakHeldBytes: this.#peakHeldBytes };
  }

  /** Drops what is held (the snapshot ended). */
  release(): void {
    this.#saved.clear();
    this.#heldBytes = 0;
    this.#pending.clearWhere(this.#pending.copy());
  }

  async #copy(block: number): Promise<void> {
    try {
      const start = block * this.blockSize;
      const data = await this.local.read(start, Math.min(this.blockSize, this.local.size - start));
      // Read for sending meanwhile (the read saw no write): nothing to keep.
      if (!this.#pending.get(block)) return;
      this.#saved.set(block, data);
      this.#copiedBlocks++;
      this.#copiedBytes += data.length;
      this.#heldBytes += data.length;
      this.#peakHeldBytes = Math.max(this.#peakHeldBytes, this.#heldBytes);
    } catch (error) {
      // The write goes on (the guest must not fail for our snapshot); the snapshot fails instead.
      this.#failure ??= new Error(`copy-before-write of block ${block} failed: ${(error as Error).message}`);
    } finally {
      this.#copying.delete(block);
    }
  }
}
