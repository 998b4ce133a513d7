// Starts QEMU for a lazyboot VM and connects to its QMP socket: the pair every caller drives.
// If QEMU dies before QMP answers, the error says why (QEMU's last stderr line); nothing is left running.
import path from 'node:path';
import { buildQemuArgs, type QemuArgsOptions } from './qemu-args.js';
import { QemuExited } from './errors.js';
import { QemuProcess, resolveQemuBinary } from './qemu-process.js';
import { QmpClient } from './qmp.js';
import type { VmOptions } from './vm-options.js';

export interface LaunchQemuOptions extends Omit<QemuArgsOptions, 'qmpSocket'>, Pick<VmOptions, 'qemuBinary'> {
  /** Directory for the QMP socket and QEMU's log (the caller owns and removes it). */
  readonly runDir: string;
  /** How long QEMU may take to answer on QMP. */
  readonly qmpTimeoutMs?: number;
}

export interface LaunchedQemu {
  readonly process: QemuProcess;
  readonly qmp: QmpClient;
  readonly args: readonly string[];
  readonly logPath: string;
}

export async function launchQemu(options: LaunchQemuOptions): Promise<LaunchedQemu> {
  const binary = resolveQemuBinary(options.qemuBinary);
  const qmpSocket = path.join(options.runDir, 'qmp.sock');
  const logPath = path.join(options.runDir, 'qemu.log');
  const args = buildQemuArgs({ ...options, qmpSocket });
  const process = QemuProcess.start({ binary, args, logPath, stdoutToTerminal: options.console });
  const exitedFirst = new AbortController();
  void process.exited.then(() => exitedFirst.abort(new QemuExited(process.exit?.exitCode, process.exit?.signal, process.stderrTail())));
  try {
    const qmp = await QmpClient.connect(qmpSocket, { timeoutMs: options.qmpTimeoutMs ?? 10_000, signal: exitedFirst.signal });
    return { process, qmp, args, logPath };
  } catch (error) {
    await process.stop(undefined);
    // QEMU exiting explains a failed connect better than the connect error does.
    if (process.exit) throw new QemuExited(process.exit.exitCode, process.exit.signal, process.stderrTail());
    throw error;
  }
}
