// Running `lazyboot` as a user does, for the repository tests: the built CLI, a fresh temp dir.
import { execa } from 'execa';
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
  /** Everything the server logged so far. */
  stderr(): string;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | undefined>;
}

/** `lazyboot repo serve --socket` in the background, once it printed its URI. */
export async function serveRepositoryCli(repo: string, socket: string): Promise<ServingRepository> {
  const server = execa('node', [BIN, 'repo', 'serve', '--repo', repo, '--socket', socket], { reject: false, buffer: { stdout: false, stderr: false } });
  let stderr = '';
  server.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    server.stdout!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (/at nbd\+unix:/.test(seen)) resolve();
    });
    void server.then((result) => reject(new Error(`repo serve exited ${result.exitCode}: ${stderr}`)));
    setTimeout(() => reject(new Error(`no URI printed: ${seen} ${stderr}`)), 15000);
  });
  return {
    socket,
    stderr: () => stderr,
    stop: async () => {
      server.kill('SIGTERM');
      const timer = setTimeout(() => server.kill('SIGKILL'), 10000);
      const result = await server;
      clearTimeout(timer);
      return result.exitCode;
    },
  };
}
