// Who fetches a block for the host: before a process fetches a block missing from the cache it
// claims the block's digest with a file created exclusively (O_EXCL) holding its PID. A process
// that finds the claim taken waits for the block to appear in the cache instead of fetching it too,
// so two boots racing for the same block fetch it once. A claim whose holder died (SIGKILL) is
// taken over; a holder that takes too long is not waited for (the waiter fetches itself: a slow
// neighbour must not stall a guest).
import { open, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive } from '../base/process-alive.js';
import { ensurePrivateDirectory } from './private-directory.js';

/** How often a waiter looks for the block another process is fetching. */
const POLL_MS = 10;
/** No fetch takes this long: an older claim is a leftover (its PID may live on in another process). */
const STALE_CLAIM_MS = 60_000;

export class FetchClaims {
  private constructor(private readonly dir: string) {}

  static async open(cacheDir: string): Promise<FetchClaims> {
    const dir = path.join(cacheDir, 'claims');
    await ensurePrivateDirectory(dir);
    return new FetchClaims(dir);
  }

  private claimPath(digest: string): string {
    return path.join(this.dir, digest);
  }

  /** True if this process now holds the claim on `digest`; false if another live process does. */
  async claim(digest: string): Promise<boolean> {
    const file = this.claimPath(digest);
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const handle = await open(file, 'wx', 0o600);
        try {
          await handle.writeFile(String(process.pid));
        } finally {
          await handle.close();
        }
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const holder = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      const ageMs = Date.now() - ((await stat(file).catch(() => undefined))?.mtimeMs ?? Date.now());
      // Being written (empty for a moment), or held by a live process: theirs.
      if ((!holder || processAlive(holder)) && ageMs < STALE_CLAIM_MS) return false;
      await rm(file, { force: true }); // its holder died, or it is a leftover: take it over
    }
    return false;
  }

  async release(digest: string): Promise<void> {
    await rm(this.claimPath(digest), { force: true });
  }

  /**
   * Waits until `ready()` says the block arrived, the claim is gone (its holder finished or gave
   * up), or `timeoutMs` passed. Returns true if the block arrived.
   */
  async waitFor(digest: string, ready: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const file = this.claimPath(digest);
    for (;;) {
      if (await ready()) return true;
      const holder = Number((await readFile(file, 'utf8').catch(() => 'gone')).trim());
      if (Number.isNaN(holder)) return ready(); // released: the block is there, or its fetch failed
      if (holder && !processAlive(holder)) return false;
      if (Date.now() >= deadline) {
        // Not worth waiting for again: the next reader claims it afresh.
        await rm(file, { force: true });
        return false;
      }
      await sleep(POLL_MS);
    }
  }
}
