// The devices of this host reading through the shared block cache right now (booting, filling):
// their number divides the fetch-ahead budget (lib/cor/fetch-ahead.ts), so that N boots at once
// keep about as many unread fetched-ahead bytes in all as one boot does.
// Each guest's own reads are fetched once for the host by the cache; what one device fetches ahead
// and no guest reads is the waste, and N devices each with a full budget speculate in N places.
//
// Every device (every CachedUpstream, also several in one process) has a file `peers/PID-ID`
// whose mtime it refreshes while it fetches blocks it lacks (from the cache or a repository); a
// peer counts while its file is younger than ACTIVE_MS and its process lives, so a VM that booted
// and now reads what it has stops counting. Files of dead processes are removed when seen.
// (Counting only devices whose fetch-ahead went upstream lately was tried: a boot's upstream
// fetch-ahead comes in bursts seconds apart, so 4 boots at once rarely saw each other.)
// Looking is cheap (one readdir and a stat per peer) and done at most once per REFRESH_MS, in the
// background: `sharers()` answers at once from the last look.
import { randomBytes } from 'node:crypto';
import { readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { processAlive } from '../base/process-alive.js';
import { ensurePrivateDirectory } from './private-directory.js';

/** A peer that has fetched nothing for this long is not booting (or filling) any more. */
const ACTIVE_MS = 10_000;
/** Least time between two looks at the peers, and between two refreshes of this peer's file. */
const REFRESH_MS = 1_000;
const PEER_NAME = /^(\d+)-[0-9a-f]+$/;

export interface SpeculationPeersOptions {
  readonly activeMs?: number;
  readonly refreshMs?: number;
}

export class SpeculationPeers {
  private readonly file: string;
  private readonly activeMs: number;
  private readonly refreshMs: number;
  /** Other peers active at the last look. */
  private others = 0;
  private lookedAt = 0;
  private touchedAt = 0;
  private looking: Promise<void> | undefined;
  private touching: Promise<void> | undefined;
  private closed = false;

  private constructor(private readonly dir: string, options: SpeculationPeersOptions) {
    this.file = path.join(dir, `${process.pid}-${randomBytes(6).toString('hex')}`);
    this.activeMs = options.activeMs ?? ACTIVE_MS;
    this.refreshMs = options.refreshMs ?? REFRESH_MS;
  }

  static async open(cacheDir: string, options: SpeculationPeersOptions = {}): Promise<SpeculationPeers> {
    const dir = path.join(cacheDir, 'peers');
    await ensurePrivateDirectory(dir);
    return new SpeculationPeers(dir, options);
  }

  /** This device's share of the host's fetch-ahead: 1 + the other peers active at the last look. */
  sharers(): number {
    this.lookSoon();
    return 1 + this.others;
  }

  /** This device is fetching blocks it lacks now. */
  fetching(): void {
    if (this.closed || Date.now() - this.touchedAt < this.refreshMs || this.touching) return;
    this.touchedAt = Date.now();
    const now = new Date();
    this.touching = utimes(this.file, now, now)
      .catch(() => writeFile(this.file, '', { mode: 0o600 }))
      .catch(() => {}) // a full or read-only cache directory: this peer is just not seen
      .finally(() => { this.touching = undefined; });
  }

  private lookSoon(): void {
    if (this.closed || this.looking || Date.now() - this.lookedAt < this.refreshMs) return;
    this.lookedAt = Date.now();
    this.looking = this.look().then(() => {}, () => {}).finally(() => { this.looking = undefined; });
  }

  /** Counts the other active peers; removes the files of dead processes. */
  async look(): Promise<number> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const own = path.basename(this.file);
    let active = 0;
    await Promise.all(names.map(async (name) => {
      const match = PEER_NAME.exec(name);
      if (!match || name === own) return;
      const file = path.join(this.dir, name);
      if (!processAlive(Number(match[1]))) {
        await rm(file, { force: true });
        return;
      }
      const info = await stat(file).catch(() => undefined);
      if (info && Date.now() - info.mtimeMs < this.activeMs) active++;
    }));
    this.others = active;
    return active;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.touching;
    await this.looking;
    await rm(this.file, { force: true });
  }
}
