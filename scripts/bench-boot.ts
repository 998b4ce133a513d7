// `scripts/bench-boot`: how fast a VM is up when its image is not on the machine yet.
// The fixture (Debian by default) sits inside a 4 GiB disk that also holds 2 GiB of data the boot
// never reads. For each repository bandwidth it measures, from the moment the boot is asked for:
// time to storage-ready, time to the first guest-ping (agent up), and bytes fetched, for
//   (a) lazyboot's lazy boot (COR device, fetch on first read)
//   (b) the fully local raw file (the lower bound)
//   (c) copy the whole image first (nbdcopy), then boot (what the design replaces)
//   (d) QEMU's own copy-on-read chain (qcow2 overlay + copy-on-read filter) over qemu-nbd
//   (t) lazyboot's second boot: the boot trace recorded by an earlier boot (untimed) replayed
//       ahead of the guest; (a) is the first boot (tracing off there, so its runs stay first boots)
// and writes the table to bench/results/boot.md.
import { createCipheriv, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ensureFixture, repositoryRoot, type FixtureName } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { chooseAccelerator } from '../vmm/accel.js';
import { DISK_NODE } from '../vmm/qemu-args.js';
import { TransientVm, type VmDisk } from '../vmm/vm.js';
import { measuredCommit } from './bench-freshness.js';
import { startServer, stopServer, watchBoot, writeReport, type BootMarks } from './bench-kit.js';
import { tuneProcess } from '../lib/process-tuning.js';
import { installSignalTeardown } from '../lib/base/cleanup.js';


const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const ROOT = repositoryRoot();
const CLI = path.join(ROOT, 'bin', 'lazyboot.js');

interface Bandwidth {
  readonly key: string;
  readonly label: string;
  readonly bytesPerSecond: number;
  /** Added to every request on its way to the repository. */
  readonly latencyMs?: number;
}

const BANDWIDTHS: Bandwidth[] = [
  { key: 'unlimited', label: 'unlimited', bytesPerSecond: 0 },
  { key: '1G', label: '1 Gbit/s', bytesPerSecond: 125_000_000 },
  { key: '100M', label: '100 Mbit/s', bytesPerSecond: 12_500_000 },
  { key: '100M+20ms', label: '100 Mbit/s + 20 ms', bytesPerSecond: 12_500_000, latencyMs: 20 },
];

interface Measurement {
  readonly scenario: string;
  readonly bandwidth: string;
  readonly storageReadyS?: number;
  readonly pingS?: number;
  readonly bytesAtStorageReady: number;
  readonly bytesAtPing: number;
  /** (a) only: bytes of image blocks the guest needed (read or partly overwrote) by ready. */
  readonly neededAtPing?: number;
  /** (t) only: bytes the trace's replay fetched, and of those the bytes the guest read, by ready. */
  readonly replay?: { readonly fetched: number; readonly read: number; readonly traceBytes: number };
  /** Lazy boots: seconds during which a guest read waited for a fetch, by ready (guest-wait.ts). */
  readonly waitedS?: number;
  readonly note?: string;
}

/** The bench disk: the fixture at offset 0, 2 GiB of incompressible, never-read data after it, 4 GiB in all. */
async function benchImage(fixture: string, out: string): Promise<void> {
  if (existsSync(out)) return;
  const partial = `${out}.partial`;
  await execa('cp', ['--sparse=always', fixture, partial]);
  const fixtureSize = (await stat(fixture)).size;
  const fillerStart = Math.ceil(fixtureSize / MiB) * MiB + 64 * MiB;
  const fillerBytes = 2 * GiB;
  if (fillerStart + fillerBytes > 4 * GiB) throw new Error(`the fixture (${fixtureSize} bytes) leaves no room for 2 GiB in 4 GiB`);
  const handle = await open(partial, 'r+');
  try {
    await handle.truncate(4 * GiB);
    // AES-CTR over zeros: unique blocks (no dedup in the repository), fast to make.
    const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
    const zeros = Buffer.alloc(8 * MiB);
    for (let offset = 0; offset < fillerBytes; offset += zeros.length) {
      await handle.write(cipher.update(zeros), 0, zeros.length, fillerStart + offset);
    }
  } finally {
    await handle.close();
  }
  await execa('mv', [partial, out]);
}

/** The throttled link, run as its own process; `bytesToClients` follows its reports (20 ms lag at most). */
interface Link {
  readonly socketPath: string;
  readonly bytesToClients: number;
  close(): Promise<void>;
}

async function startLink(socketPath: string, upstream: string, bandwidth: Pick<Bandwidth, 'bytesPerSecond' | 'latencyMs'>): Promise<Link> {
  const child = execa('node', [path.join(ROOT, 'dist', 'scripts', 'bench-boot-proxy.js'), socketPath, upstream, String(bandwidth.bytesPerSecond), String(bandwidth.latencyMs ?? 0)], { reject: false, stdin: 'ignore', buffer: false });
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    let pending = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      let newline: number;
      while ((newline = pending.indexOf('\n')) !== -1) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (line === 'listening') resolve();
        else if (line.startsWith('bytes ')) bytes = Number(line.slice(6));
      }
    });
    void child.then(() => reject(new Error('the link proxy exited')));
  });
  return {
    socketPath,
    get bytesToClients() {
      return bytes;
    },
    async close() {
      child.kill('SIGTERM');
      await child;
    },
  };
}

async function bootVm(disk: VmDisk, agent: boolean, bytes: () => number, started: number, timeoutMs: number): Promise<BootMarks & { started: number }> {
  const vm = await TransientVm.start({ disk, accel: 'auto', memoryMiB: 512, agent, timeoutMs });
  try {
    return { ...(await watchBoot(vm.events, vm.ready, bytes)), started };
  } finally {
    await vm.close();
  }
}

function measurement(scenario: string, bandwidth: string, marks: BootMarks & { started: number }, note?: string, neededAtPing?: number): Measurement {
  return {
    neededAtPing,
    scenario,
    bandwidth,
    storageReadyS: marks.storageReadyAt ? (marks.storageReadyAt - marks.started) / 1000 : undefined,
    pingS: marks.readyAt ? (marks.readyAt - marks.started) / 1000 : undefined,
    bytesAtStorageReady: marks.bytesAtStorageReady,
    bytesAtPing: marks.bytesAtReady,
    note,
  };
}

async function main(): Promise<void> {
  // launch() runs the COR device in this process: tuned like `lazyboot boot`, which it stands for.
  tuneProcess('data-path');
  installSignalTeardown(); // Ctrl-C: VMs torn down as before (the library no longer does it by itself)
  const args = await yargs(hideBin(process.argv))
    .option('image', { choices: ['debian', 'tiny'] as const, default: 'debian' as const, describe: 'fixture inside the 4 GiB bench disk' })
    .option('only', { type: 'string', array: true, choices: BANDWIDTHS.map((b) => b.key), describe: 'bandwidths to run' })
    .option('scenarios', { type: 'string', array: true, choices: ['a', 'a0', 'b', 'c', 'd', 't', 'k', 'k0'], describe: 'scenarios to run (default all; c at 100 Mbit/s takes ~4 min a boot; k: 4 boots at once through one host cache; k0: the same, fetch-ahead off)' })
    .option('repeat', { type: 'number', default: 3, describe: 'boots per cell; the table shows the median run (2 shared cores are noisy)' })
    .option('out', { type: 'string', default: path.join(ROOT, 'bench', 'results', 'boot.md') })
    .strict()
    .parseAsync();
  const fixtureName = args.image as FixtureName;
  const agent = fixtureName === 'debian'; // the tiny image has no guest agent: its "ready" is boot-complete
  const readyLabel = agent ? 'first guest-ping' : 'boot-complete';
  const benchDir = path.join(ROOT, '.cache', 'bench');
  await mkdir(benchDir, { recursive: true });
  const work = path.join(os.tmpdir(), `lazyboot-bench-${process.pid}`);
  await mkdir(work, { recursive: true });
  const say = (line: string) => process.stderr.write(`bench-boot: ${line}\n`);
  const timeoutMs = 15 * 60_000;

  const fixture = await ensureFixture(fixtureName, { log: say });
  const imageName = `bench-${fixtureName}`;
  const benchRaw = path.join(benchDir, `${imageName}-${path.basename(fixture.path, '.raw')}.raw`);
  say(`bench disk ${benchRaw}`);
  // One 4 GiB bench disk (and its repository) per fixture build is plenty: drop older ones.
  const { readdir } = await import('node:fs/promises');
  for (const entry of await readdir(benchDir)) {
    const current = [path.basename(benchRaw), `repo-${path.basename(benchRaw, '.raw')}`];
    if (entry.includes(`bench-${fixtureName}-`) && !current.includes(entry)) await rm(path.join(benchDir, entry), { recursive: true, force: true });
  }
  await benchImage(fixture.path, benchRaw);
  const repoDir = path.join(benchDir, `repo-${path.basename(benchRaw, '.raw')}`);
  if (!existsSync(path.join(repoDir, '.imported'))) {
    say('importing the bench disk into the bench repository');
    await rm(repoDir, { recursive: true, force: true });
    await mkdir(repoDir, { recursive: true });
    await execa('node', [CLI, 'image', 'import', benchRaw, imageName, '--repo', repoDir], { stdout: 'inherit', stderr: 'inherit' });
    await writeFile(path.join(repoDir, '.imported'), '');
  }
  const benchStat = await stat(benchRaw);
  const allocatedBytes = benchStat.blocks * 512;
  const accel = await chooseAccelerator('auto');
  say(accel.reason);

  const repoSocket = path.join(work, 'repo.sock');
  const qemuNbdSocket = path.join(work, 'qemu-nbd.sock');
  const repoServer = await startServer('node', [CLI, 'repo', 'serve', '--repo', repoDir, '--socket', repoSocket], repoSocket);
  const qemuNbd = await startServer('qemu-nbd', ['-r', '-t', '-f', 'raw', '--shared=16', '-x', imageName, '-k', qemuNbdSocket, path.resolve(benchRaw)], qemuNbdSocket);
  const results: Measurement[] = [];
  const bandwidths = BANDWIDTHS.filter((b) => !args.only || args.only.includes(b.key));
  const wanted = (scenario: string) => !args.scenarios || args.scenarios.includes(scenario);
  // Cells are collected first and run round-robin (one boot of each, then again), so a change of
  // load on this shared machine falls on every scenario alike instead of on one scenario's runs.
  const cells: Array<() => Promise<Measurement>> = [];
  const record = async (scenario: string, run: () => Promise<Measurement>) => {
    if (wanted(scenario)) cells.push(run);
  };
  // The trace (t) replays: recorded once by an untimed boot straight from the repository.
  let traceRecorded: Promise<string> | undefined;
  const recordedTrace = () => traceRecorded ??= (async () => {
    const traceDir = path.join(work, 'traces');
    say('(t) recording the boot trace (untimed boot)');
    const vm = await launch({ image: imageName, from: [`nbd+unix:///?socket=${repoSocket}`], agent, memoryMiB: 512, timeoutMs, trace: { dir: traceDir } });
    try {
      await vm.ready;
      const outcome = await vm.traceOutcome;
      if (outcome?.action !== 'recorded') throw new Error(`the trace boot stored no trace (${outcome?.action ?? 'not ready'})`);
    } finally {
      await vm.close();
    }
    return traceDir;
  })();
  const loadBefore = os.loadavg()[0]!;
  try {
    // (b) the lower bound: the image already local (copied beforehand, not timed).
    await record('b', async () => {
      const local = path.join(work, 'local.raw');
      await execa('cp', ['--sparse=always', benchRaw, local]);
      say('(b) local raw file');
      try {
        const marks = await bootVm({ spec: { kind: 'file', path: local }, close: async () => {} }, agent, () => 0, Date.now(), timeoutMs);
        return measurement('(b) local raw file', '—', marks);
      } finally {
        await rm(local, { force: true });
      }
    });
    for (const bandwidth of bandwidths) {
      // (a) lazyboot lazy boot, through the throttled link to `lazyboot repo serve`; (a0) the same
      // with fetch-ahead off (only what the guest reads is fetched): what fetch-ahead buys or costs.
      for (const [key, scenario, fetchAheadBytes] of [['a', '(a) lazyboot', undefined], ['a0', '(a0) lazyboot, fetch-ahead off', 0]] as const) {
        await record(key, async () => {
          const proxy = await startLink(path.join(work, 'link-a.sock'), repoSocket, bandwidth);
          say(`${scenario} at ${bandwidth.label}`);
          const started = Date.now();
          const vm = await launch({ image: imageName, from: [`nbd+unix:///?socket=${proxy.socketPath}`], agent, memoryMiB: 512, timeoutMs, fetchAheadBytes, trace: false });
          try {
            const marks = await watchBoot(vm.events, vm.ready, () => proxy.bytesToClients);
            const stats = vm.stats();
            return { ...measurement(scenario, bandwidth.label, { ...marks, started }, undefined, stats.demandedBytes), waitedS: stats.guestWaitedMs / 1000 };
          } finally {
            await vm.close();
            await proxy.close();
          }
        });
      }
      // (t) the second boot: the trace of an earlier boot (recorded once, untimed, and not
      // recorded again, so every run replays the same trace) fetched ahead of the guest.
      await record('t', async () => {
        const traceDir = await recordedTrace();
        const proxy = await startLink(path.join(work, 'link-t.sock'), repoSocket, bandwidth);
        say(`(t) lazyboot, second boot with the trace, at ${bandwidth.label}`);
        const started = Date.now();
        const vm = await launch({ image: imageName, from: [`nbd+unix:///?socket=${proxy.socketPath}`], agent, memoryMiB: 512, timeoutMs, trace: { dir: traceDir, record: false } });
        try {
          const marks = await watchBoot(vm.events, vm.ready, () => proxy.bytesToClients);
          const stats = vm.stats();
          const replay = { fetched: stats.replayFetchedBytes, read: stats.replayReadBytes, traceBytes: stats.traceBytes };
          return { ...measurement('(t) lazyboot, second boot with the trace', bandwidth.label, { ...marks, started }, `replay fetched ${(replay.fetched / MiB).toFixed(1)} MiB in ${stats.replayRequests} requests, the guest read ${(replay.read / MiB).toFixed(1)} MiB of it`, stats.demandedBytes), replay, waitedS: stats.guestWaitedMs / 1000 };
        } finally {
          await vm.close();
          await proxy.close();
        }
      });
      // (k) the host cache: 4 boots of the image at once on this host, through one fresh cache and
      // one link; the bytes over the link against one boot's (a), the slowest boot's time to ready
      // against one boot alone (a). (k0) the same with fetch-ahead off, against (a0): what the four
      // guests themselves read (their distinct blocks), the floor no cache can go under.
      for (const [key, scenario, fetchAheadBytes] of [['k', '(k) 4 boots at once, one host cache', undefined], ['k0', '(k0) 4 boots at once, one host cache, fetch-ahead off', 0]] as const) {
        await record(key, async () => {
          const proxy = await startLink(path.join(work, `link-${key}.sock`), repoSocket, bandwidth);
          const cacheDir = path.join(work, `cache-${key}-${Date.now()}`);
          say(`${scenario} at ${bandwidth.label}`);
          const started = Date.now();
          const vms = await Promise.all(Array.from({ length: 4 }, () => launch({
            image: imageName, from: [`nbd+unix:///?socket=${proxy.socketPath}`], agent, memoryMiB: 512, timeoutMs, trace: false, fetchAheadBytes, cache: { dir: cacheDir, maxBytes: 8 * GiB },
          })));
          try {
            const marks = await Promise.all(vms.map((vm) => watchBoot(vm.events, vm.ready, () => proxy.bytesToClients)));
            const slowest = marks.reduce((x, y) => ((y.readyAt ?? 0) > (x.readyAt ?? 0) ? y : x));
            const times = marks.map((m) => (((m.readyAt ?? started) - started) / 1000).toFixed(1)).join(' / ');
            const stats = vms.map((vm) => vm.stats());
            const hits = stats.reduce((sum, s) => sum + s.cacheHits, 0);
            // Where the bytes over the link went: by each boot's ready, and what the four fetched ahead.
            const byReady = marks.map((m) => m.bytesAtReady).sort((x, y) => x - y).map((b) => (b / MiB).toFixed(1)).join(' / ');
            const ahead = stats.reduce((sum, s) => sum + s.aheadFetchedBytes, 0);
            const aheadRead = stats.reduce((sum, s) => sum + s.aheadReadBytes, 0);
            const note = `the slowest of 4 (each: ${times} s); ${hits} blocks from the cache; MiB over the link by each ready: ${byReady}` +
              (ahead > 0 ? `; fetched ahead (all 4) ${(ahead / MiB).toFixed(1)} MiB, read ${(aheadRead / MiB).toFixed(1)}` : '');
            return measurement(scenario, bandwidth.label, { ...slowest, bytesAtReady: proxy.bytesToClients, started }, note);
          } finally {
            await Promise.all(vms.map((vm) => vm.close()));
            await proxy.close();
            await rm(cacheDir, { recursive: true, force: true });
          }
        });
      }
      // (c) copy everything first (nbdcopy skips holes), then boot the local copy.
      await record('c', async () => {
        const proxy = await startLink(path.join(work, 'link-c.sock'), repoSocket, bandwidth);
        const local = path.join(work, 'copied.raw');
        say(`(c) copy, then boot at ${bandwidth.label}`);
        try {
          const started = Date.now();
          await writeFile(local, '');
          await execa('truncate', ['-s', String(benchStat.size), local]);
          await execa('nbdcopy', ['--destination-is-zero', `nbd+unix:///${imageName}?socket=${proxy.socketPath}`, local]);
          const copySeconds = (Date.now() - started) / 1000;
          const marks = await bootVm({ spec: { kind: 'file', path: local }, close: async () => {} }, agent, () => proxy.bytesToClients, started, timeoutMs);
          return measurement('(c) copy first, then boot', bandwidth.label, marks, `copy ${copySeconds.toFixed(1)} s`);
        } finally {
          await proxy.close();
          await rm(local, { force: true });
        }
      });
      // (d) QEMU's own chain: nbd (qemu-nbd) ← qcow2 overlay (backing) ← copy-on-read filter.
      await record('d', async () => {
        const proxy = await startLink(path.join(work, 'link-d.sock'), qemuNbdSocket, bandwidth);
        const overlay = path.join(work, 'overlay.qcow2');
        await execa('qemu-img', ['create', '-q', '-f', 'qcow2', overlay, String(benchStat.size)]);
        say(`(d) QEMU copy-on-read chain over qemu-nbd at ${bandwidth.label}`);
        try {
          const started = Date.now();
          const nodes = [
            { driver: 'nbd', 'node-name': 'bench-remote', server: { type: 'unix', path: proxy.socketPath }, export: imageName, 'read-only': true },
            { driver: 'qcow2', 'node-name': 'bench-overlay', file: { driver: 'file', filename: overlay }, backing: 'bench-remote' },
            { driver: 'copy-on-read', 'node-name': DISK_NODE, file: 'bench-overlay' },
          ];
          const marks = await bootVm({ spec: { kind: 'blockdev', nodes }, close: async () => {} }, agent, () => proxy.bytesToClients, started, timeoutMs);
          return measurement('(d) QEMU COR chain over qemu-nbd', bandwidth.label, marks);
        } finally {
          await proxy.close();
          await rm(overlay, { force: true });
        }
      });
    }
    results.push(...(await roundRobin(args.repeat, cells)));
  } finally {
    await Promise.allSettled([stopServer(repoServer), stopServer(qemuNbd)]);
    await rm(work, { recursive: true, force: true });
  }

  const load = `load average ${loadBefore.toFixed(1)} before, ${os.loadavg()[0]!.toFixed(1)} after`;
  const report = renderReport({ commit: await measuredCommit(), results, fixtureName, benchSize: benchStat.size, allocatedBytes, accel: `${accel.reason}; ${load}; median of ${args.repeat}`, readyLabel });
  await writeReport(args.out, report);
  process.stdout.write(report);
}

/** Runs `run` n times and keeps the run with the median time to ready (its bytes and notes too). */
async function roundRobin(n: number, cells: ReadonlyArray<() => Promise<Measurement>>): Promise<Measurement[]> {
  const runs: Measurement[][] = cells.map(() => []);
  for (let i = 0; i < Math.max(1, n); i++) {
    for (const [index, cell] of cells.entries()) runs[index]!.push(await cell());
  }
  return runs.map(medianOf);
}

/** The run with the median time to ready (its bytes and notes too), with every run's time noted. */
function medianOf(runs: Measurement[]): Measurement {
  runs.sort((x, y) => (x.pingS ?? Infinity) - (y.pingS ?? Infinity));
  const median = runs[Math.floor((runs.length - 1) / 2)]!;
  const spread = runs.map((r) => (r.pingS ?? NaN).toFixed(1)).join(' / ');
  const waits = runs.every((r) => r.waitedS !== undefined) ? `; waited ${runs.map((r) => r.waitedS!.toFixed(1)).join(' / ')} s` : '';
  return { ...median, note: [median.note, runs.length > 1 ? `runs ${spread} s${waits}` : undefined].filter(Boolean).join('; ') };
}

function renderReport(input: { commit: string; results: Measurement[]; fixtureName: string; benchSize: number; allocatedBytes: number; accel: string; readyLabel: string }): string {
  const s = (value: number | undefined) => (value === undefined ? '—' : value.toFixed(1));
  const mib = (bytes: number) => (bytes / MiB).toFixed(1);
  const rows = input.results.map(
    (r) => `| ${r.scenario} | ${r.bandwidth} | ${s(r.storageReadyS)} | ${s(r.pingS)} | ${mib(r.bytesAtStorageReady)} | ${mib(r.bytesAtPing)} | ` +
      `${r.neededAtPing ? mib(r.neededAtPing) : '—'} | ${r.neededAtPing ? `${(r.bytesAtPing / r.neededAtPing).toFixed(2)}×` : '—'} | ${s(r.waitedS)} | ${r.note ?? ''} |`,
  );
  const find = (scenario: string, bandwidth: string) => input.results.find((r) => r.scenario.startsWith(scenario) && r.bandwidth === bandwidth);
  const local = input.results.find((r) => r.scenario.startsWith('(b)'));
  const goals: string[] = [];
  for (const bandwidth of BANDWIDTHS.map((b) => b.label)) {
    const a = find('(a)', bandwidth);
    const c = find('(c)', bandwidth);
    const d = find('(d)', bandwidth);
    if (!a) continue;
    const parts: string[] = [];
    if (local?.pingS && a.pingS) parts.push(`(a)/(b) = ${(a.pingS / local.pingS).toFixed(2)}× (goal ≤ 1.05×)`);
    if (a.neededAtPing) parts.push(`bytes over the link by ready / bytes the guest needed = ${(a.bytesAtPing / a.neededAtPing).toFixed(2)}× (bound ≤ 1.2×, manifest included here)`);
    const a0 = find('(a0)', bandwidth);
    if (a0?.pingS && a.pingS) parts.push(`fetch-ahead off (a0)/(a) = ${(a0.pingS / a.pingS).toFixed(2)}×`);
    if (c?.pingS && a.pingS) parts.push(`(c)/(a) = ${(c.pingS / a.pingS).toFixed(1)}× faster${bandwidth === '100 Mbit/s' ? ' (goal ≥ 5×)' : ''}`);
    if (d?.pingS && a.pingS) parts.push(`(d)/(a) = ${(d.pingS / a.pingS).toFixed(2)}× (goal ≥ 1.0×)`);
    const traced = find('(t)', bandwidth);
    if (traced?.pingS && local?.pingS) parts.push(`with the trace (t)/(b) = ${(traced.pingS / local.pingS).toFixed(2)}×${bandwidth === '100 Mbit/s' ? ' (goal ≤ 1.05×)' : ''}`);
    if (traced?.pingS && a.pingS) parts.push(`first boot / second boot with the trace (a)/(t) = ${(a.pingS / traced.pingS).toFixed(2)}×${bandwidth === '100 Mbit/s + 20 ms' ? ' (goal ≥ 2×)' : ''}`);
    if (traced?.replay && traced.replay.traceBytes > 0) parts.push(`replayed bytes the guest never read = ${((100 * (traced.replay.fetched - traced.replay.read)) / traced.replay.traceBytes).toFixed(1)}% of the trace (goal ≤ 10%)`);
    const cached = find('(k)', bandwidth);
    if (cached && a.bytesAtPing > 0) parts.push(`4 boots through one host cache: bytes over the link (k)/(a) = ${(cached.bytesAtPing / a.bytesAtPing).toFixed(2)}× one boot's (goal ≤ 1.1×)`);
    if (cached?.pingS && a.pingS) parts.push(`the slowest of the 4 to ready (k)/(a) = ${(cached.pingS / a.pingS).toFixed(2)}× one boot alone`);
    const cachedOff = find('(k0)', bandwidth);
    if (cachedOff && a0 && a0.bytesAtPing > 0) parts.push(`with fetch-ahead off, (k0)/(a0) = ${(cachedOff.bytesAtPing / a0.bytesAtPing).toFixed(2)}× (the four guests' own distinct reads: the floor for (k)/(a))`);
    parts.push(`fetched before storage-ready = ${((100 * a.bytesAtStorageReady) / input.allocatedBytes).toFixed(1)}% of the allocated bytes (goal ≤ 10%)`);
    goals.push(`- **${bandwidth}**: ${parts.join('; ')}`);
  }
  return [
    '# Boot benchmark (`scripts/bench-boot`)',
    '',
    `${new Date().toISOString()}; fixture **${input.fixtureName}** inside a ${(input.benchSize / GiB).toFixed(0)} GiB disk with 2 GiB of never-read data; ` +
      `${(input.allocatedBytes / MiB).toFixed(0)} MiB allocated; ${os.cpus().length} cores; ${input.accel}.`,
    `Code measured: ${input.commit}.`,
    `Times are seconds from the moment the boot is asked for (including the copy in (c)); bytes are what crossed the (throttled) link; ` +
      `the "ready" column is the ${input.readyLabel}. "Guest waited" is the time during which at least one guest read waited for a fetch ` +
      `(what the lazy boot adds to a boot that blocks on its disk; the link sets it, so it moves far less with the host's load than the times do).`,
    '',
    `| scenario | bandwidth | storage-ready (s) | ${input.readyLabel} (s) | MiB fetched by storage-ready | MiB fetched by ${input.readyLabel} | MiB the guest needed by ${input.readyLabel} | over the link / needed | guest waited on fetches (s) | note |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows,
    '',
    '## Against the goals',
    '',
    ...goals,
    '',
  ].join('\n');
}

main().catch((error: unknown) => {
  process.stderr.write(`bench-boot: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exitCode = 1;
});
