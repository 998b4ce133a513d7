// Runs one command in the guest with live output: guest-exec starts the shell wrapper
// (guest/command-script.ts), whose stdout/stderr/stdin are the stream ports; the host forwards
// each port to its sink as bytes arrive, polls guest-exec-status for the exit, and waits for the
// end token on both ports so no byte is lost. On a timeout it kills the command's process tree in
// the guest.
import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { GuestAgent } from '../guest/agent-client.js';
import { KILL_TREE, RUN_WRAPPER, type WrapperVerdict } from '../guest/command-script.js';
import { AgentCommandFailed } from '../guest/errors.js';
import type { CommandStreams } from '../guest/stream-ports.js';
import { GuestStreamsMissing } from './errors.js';
import { CommandNotStarted } from './errors.js';

export interface RunCommandOptions {
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** Fed to the command's stdin (once per VM); without it the command reads /dev/null. */
  readonly stdin?: Readable;
  /** Kill the command (and its children) after this long; 0 or absent = no limit. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export type RunOutcome =
  /** The command ran and ended: its code (128 + N when killed by signal N); `outputComplete` false if the end of its output never came. */
  | { readonly kind: 'exited'; readonly exitCode: number; readonly outputComplete: boolean }
  | { readonly kind: 'timed-out'; readonly timeoutMs: number };

/** How long the output may trail the exit before lazyboot stops waiting for it. */
const OUTPUT_GRACE_MS = 60_000;
/** Budget for the kill of a timed-out command's process tree (its SIGKILL comes after 2 s). */
const KILL_BUDGET_MS = 30_000;

export async function runGuestCommand(agent: GuestAgent, streams: CommandStreams, command: readonly string[], options: RunCommandOptions): Promise<RunOutcome> {
  const token = Buffer.from(`lazyboot-end-${randomBytes(16).toString('hex')}`);
  const stdout = streams.stdout.forward(token, options.stdout);
  const stderr = streams.stderr.forward(token, options.stderr);
  const outputEnded = Promise.all([stdout.done, stderr.done]);
  outputEnded.catch(() => {}); // awaited below, or abandoned with the command
  const stopForwarding = () => {
    stdout.stop();
    stderr.stop();
  };
  let pid: number;
  try {
    pid = await agent.execStart('/bin/sh', ['-c', RUN_WRAPPER, 'lazyboot-run', token.toString(), options.stdin ? '1' : '0', ...command], { captureOutput: true });
  } catch (error) {
    stopForwarding();
    if (error instanceof AgentCommandFailed) throw new CommandNotStarted(command.join(' '), 'exec-refused', error.description);
    throw error;
  }
  if (options.stdin) streams.stdin.feed(options.stdin);

  const timedOut = new AbortController();
  const timer = options.timeoutMs ? setTimeout(() => timedOut.abort(), options.timeoutMs) : undefined;
  const onAbort = () => timedOut.abort();
  options.signal?.addEventListener('abort', onAbort);
  try {
    const status = await agent.execWait(pid, { signal: timedOut.signal });
    const verdict = Buffer.from(status['out-data'] ?? '', 'base64').toString().trim().split('\n').pop() as WrapperVerdict | undefined;
    if (verdict !== 'started') {
      stopForwarding();
      const detail = Buffer.from(status['err-data'] ?? '', 'base64').toString().trim();
      if (verdict === 'not-found' || verdict === 'not-executable') throw new CommandNotStarted(command[0] ?? '', verdict);
      if (verdict === 'no-ports') throw new GuestStreamsMissing(detail || 'not found under /sys/class/virtio-ports, or busy');
      throw new CommandNotStarted(command.join(' '), 'exec-refused', `the wrapper shell ended with ${status.exitcode ?? status.signal}: ${detail}`);
    }
    const exitCode = status.exitcode ?? (status.signal !== undefined ? 128 + status.signal : 255);
    let graceTimer: NodeJS.Timeout | undefined;
    const outputComplete = await Promise.race([
      outputEnded.then(() => true),
      new Promise<boolean>((resolve) => (graceTimer = setTimeout(() => resolve(false), OUTPUT_GRACE_MS))),
    ]).finally(() => clearTimeout(graceTimer));
    if (!outputComplete) stopForwarding();
    return { kind: 'exited', exitCode, outputComplete };
  } catch (error) {
    if (!timedOut.signal.aborted || options.signal?.aborted) {
      stopForwarding();
      throw error;
    }
    stopForwarding();
    await agent.exec('/bin/sh', ['-c', KILL_TREE, 'lazyboot-kill', String(pid)], { timeoutMs: KILL_BUDGET_MS }).catch(() => undefined);
    return { kind: 'timed-out', timeoutMs: options.timeoutMs! };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
}
