// The VMM's one door to qemu-guest-agent: wait until it answers, learn whether the guest's own
// storage driver has the root disk, run programs, close.
// An adapter over guest/agent-client.ts (the guest side owns the protocol), so the VM depends only on this face.
import { waitForAgent, type GuestAgent } from '../guest/agent-client.js';
import { waitForNativeStorage } from '../guest/readiness.js';

/** What the agent said about the root disk once it is on a native bus. */
export interface AgentStorageReady {
  /** Root device, e.g. /dev/vda1. */
  readonly root: string;
  /** Bus of the disk under it (virtio, scsi, nvme). */
  readonly bus: string;
  /** The disk's serial as the guest sees it, if the agent reports it. */
  readonly serial: string | undefined;
}

export interface GuestAgentLink {
  /** The client itself, for what goes beyond exec (streamed commands, file copies). */
  readonly agent: GuestAgent;
  exec(program: string, args: readonly string[], options?: { timeoutMs?: number }): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  /** Resolves once `/` is mounted on a native-bus disk (guest-get-fsinfo); rejects with NativeStorageTimeout. */
  nativeStorage(options: { timeoutMs: number; signal: AbortSignal }): Promise<AgentStorageReady>;
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
    async nativeStorage(waitOptions) {
      const { filesystem, disk } = await waitForNativeStorage(agent, waitOptions);
      // The agent names the device without /dev (vda2).
      const root = filesystem.name.startsWith('/') ? filesystem.name : `/dev/${filesystem.name}`;
      return { root, bus: disk['bus-type'], serial: disk.serial };
    },
    async close() {
      agent.close();
    },
  };
}
