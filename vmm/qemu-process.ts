// One running qemu-system-x86_64 process (execa): its exit as a promise that never rejects, the
// tail of its stderr for error messages, and a stop that always ends with the process gone.
import { accessSync, constants, createWriteStream, type WriteStream } from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { QemuNotFound } from './errors.js';
import type { QmpClient } from './qmp.js';

export interface QemuExit {
  readonly exitCode?: number;
  readonly signal?: string;
}

export interface QemuProcessOptions {
  readonly binary: string;
  readonly args: readonly string[];
  /** QEMU's own stdout+stderr go here (the serial console has its own log). */
  readonly logPath: string;
  /** Pass QEMU's stdout (the serial console with `consoleToStdout`) through to ours. */
  readonly stdoutToTerminal?: boolean;
}

const STDERR_TAIL_BYTES = 4096;

/** `LAZYBOOT_QEMU` or qemu-system-x86_64 from PATH; a missing binary is a QemuNotFound. */
export function resolveQemuBinary(requested?: string): string {
  const binary = requested ?? process.env.LAZYBOOT_QEMU ?? 'qemu-system-x86_64';
  const candidates = binary.includes('/') ? [binary] : (process.env.PATH ?? '').split(':').filter(Boolean).map((dir) => path.join(dir, binary));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; try the next PATH entry
    }
  }
  throw new QemuNotFound(binary);
}

export class QemuProcess {
  #stderrTail = '';
  #exit: QemuExit | undefined;
  readonly exited: Promise<QemuExit>;

  private constructor(private readonly child: ResultPromise, private readonly log: WriteStream) {
    child.stderr?.on('data', (chunk: Buffer) => {
      this.#stderrTail = (this.#stderrTail + chunk.toString()).slice(-STDERR_TAIL_BYTES);
    });
    this.exited = child.then(
      (result) => this.#recordExit(result),
      (error) => this.#recordExit(error),
    );
  }

  static start(options: QemuProcessOptions): QemuProcess {
    const log = createWriteStream(options.logPath, { flags: 'a' });
    const child = execa(options.binary, options.args, {
      stdin: 'ignore',
      stdout: options.stdoutToTerminal ? ['inherit', 'pipe'] : 'pipe',
      stderr: 'pipe',
      reject: false,
      buffer: false,
      // execa kills the child when this process exits, whatever the reason: no orphan QEMU.
      cleanup: true,
      // Its own process group: a terminal's Ctrl-C (SIGINT to the foreground group) reaches
      // lazyboot only, which stops QEMU in order (pause the fill, stop = drain + flush, quit);
      // after a pivot QEMU owns the disk's data and must not die of that signal.
      detached: true,
    });
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    return new QemuProcess(child, log);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get hasExited(): boolean {
    return this.#exit !== undefined;
  }

  get exit(): QemuExit | undefined {
    return this.#exit;
  }

  stderrTail(): string {
    return this.#stderrTail;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.hasExited) this.child.kill(signal);
  }

  /**
   * Asks QEMU to stop the guest (vCPUs halted, I/O drained, every disk flushed) and quit over QMP
   * (if given), waits `graceMs`, then SIGKILLs it. Resolves once it is gone.
   */
  async stop(qmp: QmpClient | undefined, graceMs = 3000): Promise<QemuExit> {
    if (!this.hasExited && qmp && !qmp.closed) {
      await qmp.execute('stop', undefined, { timeoutMs: graceMs }).catch(() => undefined);
      await qmp.execute('quit', undefined, { timeoutMs: graceMs }).catch(() => {
        // no answer or connection already gone: the kill below settles it
      });
    }
    if (!this.hasExited) {
      const timer = setTimeout(() => this.kill('SIGKILL'), qmp ? graceMs : 0);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exited;
  }

  #recordExit(result: unknown): QemuExit {
    const { exitCode, signal } = result as { exitCode?: number; signal?: string };
    this.#exit = { exitCode, signal };
    this.log.end();
    return this.#exit;
  }
}
