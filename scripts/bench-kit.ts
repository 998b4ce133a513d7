// What every benchmark in scripts/ needs, written once: start a server process and wait for its
// socket, stop it, read a process's memory and CPU time from /proc, take a median, name a tool's
// version, keep a run's source files in the page cache, follow a boot's events to storage-ready
// and ready, and write the report.
import { access, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import type { VmEvent } from '../vmm/vm.js';

/** A running server process (wrapped: a bare execa promise would be awaited to its exit). */
export interface ServerProcess {
  readonly child: ResultPromise;
  readonly pid: number;
}

/** Every server started here and not stopped yet: for a cleanup on Ctrl-C. */
export const runningServers = new Set<ResultPromise>();

/**
 * Starts `command` and waits until `socket` exists (up to 30 s); a server that exits first, or
 * never makes its socket, is an error with the end of its stderr.
 */
export async function startServer(command: string, args: readonly string[], socket: string): Promise<ServerProcess> {
  // A socket file left by an earlier server on this path would pass for this one being up.
  await rm(socket, { force: true });
  const child = execa(command, args, { reject: false, buffer: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' });
  runningServers.add(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-2000); });
  let exited = false;
  void child.then(() => { exited = true; });
  for (let i = 0; i < 1200; i++) {
    if (await access(socket).then(() => true, () => false)) {
      await sleep(100); // the socket exists a moment before the server accepts on it
      return { child, pid: child.pid! };
    }
    if (exited) break;
    await sleep(25);
  }
  child.kill('SIGKILL');
  runningServers.delete(child);
  throw new Error(`${command} ${args.join(' ')} did not start serving on ${socket}: ${stderr.trim()}`);
}

export async function stopServer(server: ServerProcess | undefined): Promise<void> {
  if (!server) return;
  server.child.kill('SIGTERM');
  await server.child;
  runningServers.delete(server.child);
}

export { median } from '../lib/base/median.js';

/** Resident memory of a process now and at its peak, in bytes. */
export async function processMemory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rss: kib('VmRSS') * 1024, peak: kib('VmHWM') * 1024 };
}

/** CPU time (user + system, all threads) a process has used so far, in seconds (10 ms resolution). */
export async function processCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/**
 * Reads files through the page cache before a timed run, outside its timing. This machine's kernel
 * runs DAMON with a pageout scheme (memory accessed at most once per 5 s interval for 12 intervals
 * is reclaimed), and a file that a benchmark reads once per pass looks cold to it: warmed once at
 * the start, the sources were paged out under the runs (the page cache held <1 GiB with 22 GiB
 * free, and a bench-nbd run saw every server 2-4× slower with 3× the server CPU). Warming before
 * each run puts every side back on a warm cache, as the reports say they are.
 */
export async function warmPageCache(paths: readonly string[]): Promise<void> {
  for (const path of paths) await execa('cat', [path], { stdout: 'ignore' });
}

/** The pack files of a repository directory: what its server reads (for warmPageCache). */
export async function packFiles(repoDir: string): Promise<string[]> {
  return (await readdir(join(repoDir, 'packs'))).filter((f) => f.endsWith('.pack')).map((f) => join(repoDir, 'packs', f));
}

/** The first line a tool prints for its version. */
export async function versionOf(command: string, args: readonly string[]): Promise<string> {
  const { stdout } = await execa(command, args, { reject: false });
  return stdout.split('\n')[0] ?? '?';
}

export async function writeReport(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
}

export interface BootMarks {
  storageReadyAt?: number;
  readyAt?: number;
  bytesAtStorageReady: number;
  bytesAtReady: number;
}

/** Waits for storage-ready and ready on a VM's events, sampling `bytes()` at each. */
export async function watchBoot(events: { on(listener: (event: VmEvent) => void): () => void; history: readonly VmEvent[] }, ready: Promise<void>, bytes: () => number): Promise<BootMarks> {
  const marks: BootMarks = { bytesAtStorageReady: 0, bytesAtReady: 0 };
  const onEvent = (event: VmEvent) => {
    if (event.type === 'guest-event' && event.event.event === 'storage-ready' && marks.storageReadyAt === undefined) {
      marks.storageReadyAt = Date.now();
      marks.bytesAtStorageReady = bytes();
    }
  };
  events.history.forEach(onEvent);
  const stop = events.on(onEvent);
  await ready;
  marks.readyAt = Date.now();
  marks.bytesAtReady = bytes();
  stop();
  return marks;
}
