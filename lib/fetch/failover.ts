// Stripe/failover layer: spreads block reads over several repositories (each already verified)
// and, on error, timeout or digest mismatch, retries the read on the next one. A repository that
// fails is backed off (1 s, doubling to 30 s) and tried again later; while backed off it is only
// used when every healthy one has failed for this read.
import { BlockError, type BlockBackend } from '../block/backend.js';
import { FetchTimeout } from './errors.js';
import { ReadOnlyBackend } from '../block/read-only.js';

export interface FailoverMember {
  readonly uri: string;
  readonly backend: BlockBackend;
  /** Drops a connection that timed out, so the next attempt starts fresh. */
  readonly reset?: (reason: string) => void;
}

export interface FetchErrorEvent {
  readonly uri: string;
  readonly firstBlock: number;
  readonly blockCount: number;
  readonly error: Error;
  /** True when no repository could serve the read (the guest sees EIO, unless speculative). */
  readonly final: boolean;
  /** A fetch ahead of the guest (readSpeculative): no guest request fails with it. */
  readonly speculative?: boolean;
}

/** The log line for a fetch error (what the COR device logs). */
export function describeFetchError(event: FetchErrorEvent): string {
  if (event.final && event.speculative) return `fetch ahead failed (no guest read affected): ${event.error.message}`;
  if (event.final) return `fetch failed: ${event.error.message}`;
  return `repository ${event.uri} failed on blocks ${event.firstBlock}..${event.firstBlock + event.blockCount - 1}: ${event.error.message}`;
}

export interface FailoverOptions {
  readonly blockSize: number;
  /** Per-request timeout (default 10 s). */
  readonly timeoutMs?: number;
  /** Adjacent requests within this many blocks go to the same repository (default 64). */
  readonly stripeBlocks?: number;
  readonly onFetchError?: (event: FetchErrorEvent) => void;
  readonly now?: () => number;
}

const FIRST_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;

interface MemberState {
  readonly member: FailoverMember;
  backoffMs: number;
  retryAt: number;
}

export class FailoverBackend extends ReadOnlyBackend {
  readonly size: number;
  readonly constraints;
  private readonly members: MemberState[];

  constructor(members: FailoverMember[], private readonly options: FailoverOptions) {
    super();
    if (members.length === 0) throw new RangeError('failover needs at least one repository');
    this.members = members.map((member) => ({ member, backoffMs: 0, retryAt: 0 }));
    this.size = members[0]!.backend.size;
    this.constraints = members[0]!.backend.constraints;
  }

  /** Which repositories are backed off right now (for status output). */
  health(): Array<{ uri: string; healthy: boolean; retryInMs: number }> {
    const now = this.now();
    return this.members.map((m) => ({ uri: m.member.uri, healthy: m.retryAt <= now, retryInMs: Math.max(0, m.retryAt - now) }));
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return this.readReporting(offset, length, false);
  }

  /** A read no guest waits for yet (fetch-ahead): its failures are reported as speculative. */
  async readSpeculative(offset: number, length: number): Promise<Buffer> {
    return this.readReporting(offset, length, true);
  }

  private async readReporting(offset: number, length: number, speculative: boolean): Promise<Buffer> {
    const { blockSize } = this.options;
    const firstBlock = Math.floor(offset / blockSize);
    const blockCount = Math.ceil((offset + length) / blockSize) - firstBlock;
    const errors: string[] = [];
    let lastError: Error | undefined;
    for (const state of this.attemptOrder(firstBlock)) {
      try {
        const data = await this.withTimeout(state, firstBlock, offset, length);
        state.backoffMs = 0;
        state.retryAt = 0;
        return data;
      } catch (error) {
        lastError = error instanceof Error ? error : new Error(String(error));
        // A store's own errors may name the repository already (s3://…: cannot reach …).
        errors.push(lastError.message.startsWith(state.member.uri) ? lastError.message : `${state.member.uri}: ${lastError.message}`);
        state.backoffMs = Math.min(MAX_BACKOFF_MS, state.backoffMs ? state.backoffMs * 2 : FIRST_BACKOFF_MS);
        state.retryAt = this.now() + state.backoffMs;
        this.options.onFetchError?.({ uri: state.member.uri, firstBlock, blockCount, error: lastError, final: false, speculative });
      }
    }
    const message = `blocks ${firstBlock}..${firstBlock + blockCount - 1}: every repository failed (${errors.join('; ')})`;
    const final = new BlockError('EIO', message, { cause: lastError });
    this.options.onFetchError?.({ uri: this.members.map((m) => m.member.uri).join(', '), firstBlock, blockCount, error: final, final: true, speculative });
    throw final;
  }

  /** Healthy members first, starting at this stripe's owner; then backed-off ones, soonest first. */
  private attemptOrder(firstBlock: number): MemberState[] {
    const now = this.now();
    const stripe = Math.floor(firstBlock / (this.options.stripeBlocks ?? 64));
    const rotated = this.members.map((_, i) => this.members[(stripe + i) % this.members.length]!);
    const healthy = rotated.filter((m) => m.retryAt <= now);
    const backedOff = rotated.filter((m) => m.retryAt > now).sort((a, b) => a.retryAt - b.retryAt);
    return [...healthy, ...backedOff];
  }

  private withTimeout(state: MemberState, firstBlock: number, offset: number, length: number): Promise<Buffer> {
    const timeoutMs = this.options.timeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new FetchTimeout(state.member.uri, firstBlock, timeoutMs);
        state.member.reset?.(error.message);
        reject(error);
      }, timeoutMs);
    });
    return Promise.race([state.member.backend.read(offset, length), timeout]).finally(() => clearTimeout(timer));
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.members.map((m) => m.member.backend.close()));
  }
}
