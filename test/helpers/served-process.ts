// Test helper: a real `lazyboot repo serve` or `lazyboot disk serve` child process, its URI once
// it serves, its stderr so far, and its memory from /proc/PID/status.
import { execa, type ResultPromise } from 'execa';
import { readFile } from 'node:fs/promises';
import { CLI as BIN } from './cli-path.js';

export const MiB = 1024 * 1024;

export interface ServedProcess {
  readonly pid: number;
  /** The URI it printed (nbd+unix:///?socket=… or nbd://HOST:PORT, nbds… with TLS). */
  readonly uri: string;
  stderr(): string;
  /** Resolves once stderr matches (polling), false if it did not within `ms`. */
  waitForLog(pattern: RegExp, ms?: number): Promise<boolean>;
  /** SIGINT, then the exit code. */
  stop(): Promise<number | undefined>;
}

export async function startServing(args: string[]): Promise<ServedProcess> {
  const child: ResultPromise = execa('node', [BIN, ...args], { reject: false, buffer: false, stdin: 'ignore' });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const uri = await new Promise<string>((resolve, reject) => {
    let seen = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      const match = / at (\S+)/.exec(seen);
      if (match && seen.includes('\n')) resolve(match[1]!);
    });
    child.on('exit', (code) => reject(new Error(`lazyboot ${args.join(' ')} exited (${code}) before serving: ${stderr.trim()}`)));
  });
  let exited: Promise<number | undefined> | undefined;
  return {
    pid: child.pid!,
    uri,
    stderr: () => stderr,
    async waitForLog(pattern, ms = 30_000) {
      const deadline = Date.now() + ms;
      while (!pattern.test(stderr)) {
        if (Date.now() > deadline) return false;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return true;
    },
    stop() {
      exited ??= (async () => {
        child.kill('SIGINT');
        const result = await child;
        return result.exitCode;
      })();
      return exited;
    },
  };
}

/** VmRSS and VmHWM (peak) of a process, in bytes. */
export async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}
