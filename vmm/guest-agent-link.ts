// The VMM's one door to qemu-guest-agent: wait until it answers, run programs, close.
// An adapter over guest/agent-client.ts (the guest side owns the protocol), so the VM depends only on this face.
import { waitForAgent, type GuestAgent } from '../guest/agent-client.js';

export interface GuestAgentLink {
  /** The client itself, for what goes beyond exec (streamed commands, file copies). */
  readonly agent: GuestAgent;
  exec(program: string, args: readonly string[], options?: { timeoutMs?: number }): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

/** Resolves once the agent answers the handshake; rejects with AgentTimeout, or the abort reason. */
export async function connectGuestAgent(socketPath: string, options: { timeoutMs: number; signal: AbortSignal }): Promise<GuestAgentLink> {
  // TCG guests are slow: a guest-exec of a small command can take seconds.
  const agent = await waitForAgent(socketPath, { timeoutMs: options.timeoutMs, signal: options.signal, commandTimeoutMs: 120_000 });
  return {
    agent,
    async exec(program, args, execOptions = {}) {
      const result = await agent.exec(program, [...args], execOptions);
      return { exitCode: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
    },
    async close() {
      agent.close();
    },
  };
}
