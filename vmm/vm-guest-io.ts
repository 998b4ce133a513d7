// The transient VM's ways into a running guest: programs through qemu-guest-agent (exec), commands
// with live output over the stream ports (guest-command.ts), and file copies in and out. TransientVm
// connects the agent and hands it over; this part owns the stream ports and closes both at teardown.
import path from 'node:path';
import { connectCommandStreams, type CommandStreams } from '../guest/stream-ports.js';
import { copyFromGuest, copyToGuest, type CopyResult } from '../guest/agent-files.js';
import { IllegalVmAction } from './errors.js';
import type { GuestAgentLink } from './guest-agent-link.js';
import { runGuestCommand, type RunCommandOptions, type RunOutcome } from './guest-command.js';
import type { VmLifecycle } from './lifecycle.js';

export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The guest channel sockets QEMU creates in the VM's run dir. */
export function guestSocketsIn(runDir: string) {
  return {
    agentSocket: path.join(runDir, 'agent.sock'),
    eventsSocket: path.join(runDir, 'events.sock'),
    streamSockets: { stdout: path.join(runDir, 'stdout.sock'), stderr: path.join(runDir, 'stderr.sock'), stdin: path.join(runDir, 'stdin.sock') },
  };
}

export class GuestIo {
  #agent: GuestAgentLink | undefined;
  /** The command stream ports, connected at QEMU's start (a guest reading a port without a host sees end of file). */
  #streams: Promise<CommandStreams> | undefined;

  constructor(private readonly lifecycle: VmLifecycle) {}

  /** Connects the stream ports at once (QEMU has created them). */
  connectStreams(sockets: ReturnType<typeof guestSocketsIn>['streamSockets'], signal: AbortSignal): void {
    this.#streams = connectCommandStreams(sockets, { signal });
    this.#streams.catch(() => {}); // QEMU died or teardown began: runCommand() reports it
  }

  /** The agent answered: from now on exec and the copies go through it. */
  agentConnected(agent: GuestAgentLink): void {
    this.#agent = agent;
  }

  /** Runs a program in the guest through qemu-guest-agent (guest-exec); the VM must be running. */
  async exec(program: string, args: readonly string[] = [], options: { timeoutMs?: number } = {}): Promise<ExecResult> {
    this.lifecycle.assertAllowed('exec');
    if (!this.#agent) throw new IllegalVmAction('exec in (no guest agent)', this.lifecycle.state);
    return this.#agent.exec(program, args, options);
  }

  /** Runs a command in the guest with live output on the sinks (guest-command.ts); the VM must be running. */
  async runCommand(command: readonly string[], options: RunCommandOptions): Promise<RunOutcome> {
    const agent = this.#runningAgent('run a command in');
    if (!this.#streams) throw new IllegalVmAction('run a command in (no stream ports)', this.lifecycle.state);
    return runGuestCommand(agent, await this.#streams, command, options);
  }

  /** Copies a host file into the guest through the agent's file calls. */
  copyToGuest(hostPath: string, guestPath: string): Promise<CopyResult> {
    return copyToGuest(this.#runningAgent('copy into'), hostPath, guestPath);
  }

  /** Copies a guest file out to the host through the agent's file calls. */
  copyFromGuest(guestPath: string, hostPath: string): Promise<CopyResult> {
    return copyFromGuest(this.#runningAgent('copy out of'), guestPath, hostPath);
  }

  /** An agent has answered (freeze, exec and the copies can go through it). */
  get hasAgent(): boolean {
    return this.#agent !== undefined;
  }

  /** Freezes the guest's file systems (guest-fsfreeze-freeze): how many it froze. */
  freezeFilesystems(): Promise<number> {
    return this.#runningAgent('freeze the file systems of').fsfreeze();
  }

  /** Thaws them (guest-fsfreeze-thaw): how many it thawed. Asked also while the VM stops: a frozen guest cannot shut down. */
  thawFilesystems(): Promise<number> {
    if (!this.#agent) throw new IllegalVmAction('thaw the file systems of (no guest agent)', this.lifecycle.state);
    return this.#agent.agent.fsthaw();
  }

  /** After QEMU has exited: the agent link and the stream ports. */
  async close(): Promise<void> {
    await this.#agent?.close().catch(() => {});
    await this.#streams?.then((streams) => streams.close(), () => {});
  }

  #runningAgent(action: string) {
    this.lifecycle.assertAllowed('exec');
    if (!this.#agent) throw new IllegalVmAction(`${action} (no guest agent)`, this.lifecycle.state);
    return this.#agent.agent;
  }
}
