// Running `lazyboot` as a user does, for the repository tests: the built CLI, a fresh temp dir.
import { execa } from 'execa';
import { withDir } from 'tmp-promise';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../../bin/lazyboot.js', import.meta.url));

/** Runs the CLI; never throws on a non-zero exit (the tests look at it). */
export function lazyboot(args: string[], env: Record<string, string> = {}) {
  return execa('node', [BIN, ...args], { reject: false, env });
}

export const inTempDir = (body: (dir: string) => Promise<void>) => withDir(({ path }) => body(path), { unsafeCleanup: true });

/** An error as the CLI must print it: one line, starting with "lazyboot: ". */
export function oneLine(stderr: string): boolean {
  return stderr.trim().split('\n').length === 1 && stderr.startsWith('lazyboot: ');
}
