// Per-block claims of the copy-on-read layer: the one lock of the block path.
//
// Locking rule: a claim holds, per block, the promise of an operation that will make an absent
// block present (a fetch, the local write of fetched data, or a whole-block guest write). Whoever
// wants to change an absent block must first await its claim; claims are made synchronously
// after the last await, so two claims on one block cannot interleave.
export class BlockClaims {
  private readonly held = new Map<number, Promise<void>>();

  /** The operation holding `block`, if any. */
  holder(block: number): Promise<void> | undefined {
    return this.held.get(block);
  }

  isClaimed(block: number): boolean {
    return this.held.has(block);
  }

  /** Blocks [first, first + count) are now held by `operation`. */
  claim(first: number, count: number, operation: Promise<void>): void {
    for (let b = first; b < first + count; b++) this.held.set(b, operation);
  }

  /** Releases the blocks of [first, first + count) that `operation` still holds (a later claim keeps its own). */
  release(first: number, count: number, operation: Promise<void>): void {
    for (let b = first; b < first + count; b++) if (this.held.get(b) === operation) this.held.delete(b);
  }

  /** The first operation holding a block of [first, last], if any. */
  firstHolder(first: number, last: number): Promise<void> | undefined {
    for (let b = first; b <= last; b++) {
      const operation = this.held.get(b);
      if (operation) return operation;
    }
    return undefined;
  }

  /** Resolves once every operation holding a block now has settled. */
  async settled(): Promise<void> {
    await Promise.allSettled([...new Set(this.held.values())]);
  }
}
