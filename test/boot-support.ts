// Shared pieces of the boot tests: the tiny/debian fixtures imported into a repository served by a
// separate `lazyboot repo serve` process, the CLI as a child process, and leftover checks.
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { appendFile, copyFile, mkdir, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { serveRepositoryCli } from './helpers/repo-cli.js';
import { execa, type ResultPromise } from 'execa';
import type { ExecutionContext } from 'ava';
import { dir } from 'tmp-promise';
import { processAlive as isProcessAlive } from '../lib/base/process-alive.js';
import { CLI } from './helpers/cli-path.js';

export { CLI };

export interface ServedRepository {
  readonly repoDir: string;
  readonly socketPath: string;
  /** `nbd+unix:///?socket=PATH`: one URI gives manifests and blocks. */
  readonly uri: string;
  readonly server: ResultPromise;
  stop(): Promise<void>;
}

/** A fresh repository holding `image` (from `file`) in `scratch`. */
export async function importImage(scratch: string, file: string, name: string): Promise<string> {
  const repoDir = path.join(scratch, 'repo');
  await mkdir(repoDir, { recursive: true });
  await execa('node', [CLI, 'image', 'import', file, name, '--repo', repoDir]);
  return repoDir;
}

/**
 * The tiny image with 8 MiB of random data after its partitions: the guest never reads it, so it is
 * still absent after the boot and the fill has to stream it (a boot fetches nearly all of the tiny
 * image's own data).
 */
export async function tinyWithUnreadTail(scratch: string, tinyPath: string): Promise<{ path: string; sizeBytes: number }> {
  const image = path.join(scratch, 'tiny-tail.raw');
  await copyFile(tinyPath, image);
  await appendFile(image, randomBytes(8 * 1024 * 1024));
  return { path: image, sizeBytes: (await stat(image)).size };
}

/** Starts `lazyboot repo serve` as its own process (helpers/repo-cli.ts), stopped at the test's end. */
export async function serveRepository(t: ExecutionContext, repoDir: string): Promise<ServedRepository> {
  const socketPath = path.join(repoDir, 'serve.sock');
  const served = await serveRepositoryCli(repoDir, socketPath);
  const stop = async () => { await served.stop(); };
  t.teardown(stop);
  return { repoDir, socketPath, uri: served.uri, server: served.child, stop };
}

/** A scratch dir used as TMPDIR for a child, so its temp files can be checked for leftovers. */
export async function scratchDir(t: ExecutionContext): Promise<string> {
  const scratch = await dir({ unsafeCleanup: true, prefix: 'lazyboot-boot-test-' });
  t.teardown(() => scratch.cleanup());
  return scratch.path;
}

/** processAlive for a PID that may not be known (undefined: no process). */
export function processAlive(pid: number | undefined): boolean {
  return pid !== undefined && pid > 0 && isProcessAlive(pid);
}

/** Entries lazyboot left in a TMPDIR (VM run dirs, temp disks, COR sockets). */
export async function leftovers(tmp: string): Promise<string[]> {
  if (!existsSync(tmp)) return [];
  return (await readdir(tmp)).filter((entry) => entry.startsWith('lazyboot-'));
}

/** QEMU processes whose command line mentions `needle` (e.g. a test's TMPDIR). */
export async function qemuProcessesMentioning(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const { readFile } = await import('node:fs/promises');
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replaceAll('\0', ' ');
      if (cmdline.includes('qemu-system') && cmdline.includes(needle)) found.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

/** One watcher per child and stream, so that successive waits see every line since the first. */
const watchers = new WeakMap<ResultPromise, Map<string, ReturnType<typeof watchOutput>>>();

/**
 * Resolves with the first match of `pattern` in the child's `stream` since the first wait on it
 * (a line that came in the same chunk as the one an earlier wait matched counts too); rejects if
 * the child ends first.
 */
export function waitForLine(child: ResultPromise, stream: 'stdout' | 'stderr', pattern: RegExp): Promise<RegExpExecArray> {
  let byStream = watchers.get(child);
  if (!byStream) watchers.set(child, (byStream = new Map()));
  let watcher = byStream.get(stream);
  if (!watcher) byStream.set(stream, (watcher = watchOutput(child, stream)));
  return watcher.seen(pattern);
}

/**
 * Watches a child's stream from now on: `seen(pattern)` resolves with the first match in all the
 * output so far (lines that arrived before the call count too); rejects if the child ends first.
 */
export function watchOutput(child: ResultPromise, stream: 'stdout' | 'stderr'): { seen(pattern: RegExp): Promise<RegExpExecArray> } {
  let text = '';
  const waiters = new Set<() => void>();
  child[stream]!.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    for (const check of waiters) check();
  });
  return {
    seen: (pattern) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(text);
          if (!match) return;
          waiters.delete(check);
          resolve(match);
        };
        waiters.add(check);
        check();
        void child.then(() => {
          check();
          if (waiters.delete(check)) reject(new Error(`the process ended before ${pattern}: ${text}`));
        });
      }),
  };
}
