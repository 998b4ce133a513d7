// Running `lazyboot` as a user does, for the repository tests: the built CLI, a fresh temp dir.
import { execa, type ResultPromise } from 'execa';
import { withDir } from 'tmp-promise';
import { CLI } from './cli-path.js';

export const BIN = CLI;

/** Runs the CLI; never throws on a non-zero exit (the tests look at it). */
export function lazyboot(args: string[], env: Record<string, string> = {}) {
  return execa('node', [BIN, ...args], { reject: false, env });
}

export const inTempDir = (body: (dir: string) => Promise<void>) => withDir(({ path }) => body(path), { unsafeCleanup: true });

/** An error as the CLI must print it: one line, starting with "lazyboot: ". */
export function oneLine(stderr: string): boolean {
  return stderr.trim().split('\n').length === 1 && stderr.startsWith('lazyboot: ');
}

export interface ServingRepository {
  readonly socket: string;
  readonly uri: string;
  readonly pid: number;
  /** The server process (for tests that signal it or wait for its end). */
  readonly child: ResultPromise;
  /** Everything the server logged so far. */
  stderr(): string;
  /** SIGTERM (SIGKILL after 10 s), then the exit code. */
  stop(): Promise<number | undefined>;
  /** SIGKILL, then its end. */
  kill(): Promise<void>;
}

/**
 * `lazyboot repo serve --socket` in the background, once it printed "serving … at URI": the one
 * way tests start the repository server as a process. `extraArgs`: e.g. ['--no-verify'].
 */
export async function serveRepositoryCli(repo: string, socket: string, extraArgs: readonly string[] = []): Promise<ServingRepository> {
  const child = execa('node', [BIN, 'repo', 'serve', '--repo', repo, '--socket', socket, ...extraArgs], { reject: false, stdin: 'ignore', buffer: { stdout: false, stderr: false } });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  try {
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        seen += chunk.toString();
        if (/serving .* at nbd\+unix:/.test(seen)) resolve();
      });
      void child.then((result) => reject(new Error(`repo serve exited ${result.exitCode} before serving: ${stderr}`)));
      // Generous: a start-up under a loaded machine's 20+ load average has taken over 15 s.
      setTimeout(() => reject(new Error(`repo serve printed no URI in 60 s: ${seen} ${stderr}`)), 60_000).unref();
    });
  } catch (error) {
    child.kill('SIGKILL');
    await child;
    throw error;
  }
  let ended: Promise<number | undefined> | undefined;
  const end = (signal: NodeJS.Signals) => {
    child.kill(signal);
    return ended ??= (async () => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const result = await child;
      clearTimeout(timer);
      return result.exitCode;
    })();
  };
  return {
    socket,
    uri: `nbd+unix:///?socket=${socket}`,
    pid: child.pid!,
    child,
    stderr: () => stderr,
    stop: () => end('SIGTERM'),
    kill: async () => { await end('SIGKILL'); },
  };
}
