// Runs `lazyboot disk serve` as a real process: either it serves (its URI, stop with a signal) or
// it exits (its code and stderr). Used by the disk lock and disk binding tests.
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { CLI } from './cli-path.js';

export const BIN = CLI;

export type ServeOutcome =
  | { readonly serving: true; readonly uri: string; readonly child: ResultPromise; stop(signal?: NodeJS.Signals): Promise<void>; stderr(): string }
  | { readonly serving: false; readonly exitCode: number | undefined; readonly stderr: string };

/**
 * The temp dir of the socket `disk serve` made itself (no --socket): a process killed with SIGKILL
 * cannot remove it, so the test does, once the process is gone.
 */
function ownSocketDir(uri: string): string | undefined {
  const socket = new URL(uri).searchParams.get('socket');
  const dir = socket ? dirname(socket) : undefined;
  return dir && dirname(dir) === tmpdir() && basename(dir).startsWith('lazyboot-cor-') ? dir : undefined;
}

/** Starts `disk serve ARGS` and resolves once it prints its URI or exits, whichever comes first. */
export function serveDisk(args: readonly string[], options: { shell?: string } = {}): Promise<ServeOutcome> {
  const child = options.shell
    ? execa('sh', ['-c', `${options.shell}; exec node "$0" disk serve "$@"`, BIN, ...args], { reject: false, buffer: false, stdin: 'ignore' })
    : execa('node', [BIN, 'disk', 'serve', ...args], { reject: false, buffer: false, stdin: 'ignore' });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  return new Promise((resolve) => {
    let seen = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      const match = / at (nbd\+unix:\S+)/.exec(seen);
      if (!match) return;
      const socketDir = ownSocketDir(match[1]!);
      const gone = child.then(() => (socketDir ? rm(socketDir, { recursive: true, force: true }) : undefined));
      resolve({
        serving: true, uri: match[1]!, child, stderr: () => stderr,
        async stop(signal = 'SIGTERM') {
          child.kill(signal);
          await gone;
        },
      });
    });
    // execa settles after the process exited and its output was read to the end.
    void child.then((result) => resolve({ serving: false, exitCode: result.exitCode, stderr }));
  });
}
