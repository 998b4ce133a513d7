// The VMM's one door to qemu-guest-agent: wait until it answers, run programs, close.
// Adapter over guest/agent-client.ts (guest side owner), so the VM depends only on this face.
import { LazybootError } from '../lib/errors.js';

export interface GuestAgentLink {
  exec(program: string, args: readonly string[], options?: { timeoutMs?: number }): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

export async function connectGuestAgent(_socketPath: string, _options: { timeoutMs: number; signal: AbortSignal }): Promise<GuestAgentLink> {
  throw new LazybootError('the guest agent client is not built yet', 'boot without waiting for the agent');
}
