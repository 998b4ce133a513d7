// Benchmark: the same disk image served by lazyboot (`repo serve`), qemu-nbd and `nbdkit file`,
// read fully with nbdcopy and with qemu-img convert, and with scattered 4 KiB reads. Prints a
// table with ratios to qemu-nbd and writes it to bench/results/nbd.md. Not a test.
//
// Usage: node dist/scripts/bench-nbd.js [--size-mib 1024] [--runs 3] [--out bench/results/nbd.md]
import { repositoryRoot } from '../fixtures/build.js';
import { median } from '../lib/base/median.js';
import { measuredCommit } from './bench-freshness.js';
import { packFiles, processCpuSeconds, startServer, stopServer, versionOf, warmPageCache, writeReport, type ServerProcess } from './bench-kit.js';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';

const ROOT = repositoryRoot();
const BIN = join(ROOT, 'bin', 'lazyboot.js');
const MiB = 1024 * 1024;

function option(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && process.argv[at + 1] ? process.argv[at + 1]! : fallback;
}

const sizeMiB = Number(option('size-mib', '1024'));
const runs = Number(option('runs', '3'));
const outFile = option('out', join(ROOT, 'bench', 'results', 'nbd.md'));
const RANDOM_READS = 50_000;

interface Server extends ServerProcess {
  readonly label: string;
  readonly uri: string;
  /** The files it serves from, warmed before each run (warmPageCache). */
  readonly sources: readonly string[];
}

interface Workload {
  readonly label: string;
  readonly unit: string;
  /** Amount of work per run, in `unit`·seconds (bytes for MiB/s, operations for IOPS). */
  readonly amount: number;
  run(uri: string): Promise<void>;
}

/** A sparse raw disk: each 4th MiB is zeros (a hole), the rest random data. */
async function makeImage(path: string): Promise<void> {
  const handle = await open(path, 'w');
  try {
    for (let i = 0; i < sizeMiB; i++) {
      if (i % 4 === 3) continue;
      await handle.write(randomBytes(MiB), 0, MiB, i * MiB);
    }
    await handle.truncate(sizeMiB * MiB);
  } finally {
    await handle.close();
  }
}

async function startServers(dir: string, image: string, repo: string): Promise<Server[]> {
  const lazySocket = join(dir, 'lazyboot.sock');
  const qemuSocket = join(dir, 'qemu-nbd.sock');
  const nbdkitSocket = join(dir, 'nbdkit.sock');
  const packs = await packFiles(repo);
  return [
    { label: 'lazyboot', uri: `nbd+unix:///bench?socket=${lazySocket}`, sources: packs, ...await startServer('node', [BIN, 'repo', 'serve', '--repo', repo, '--socket', lazySocket], lazySocket) },
    { label: 'qemu-nbd', uri: `nbd+unix:///?socket=${qemuSocket}`, sources: [image], ...await startServer('qemu-nbd', ['-r', '-f', 'raw', '--shared=16', '-t', '-k', qemuSocket, image], qemuSocket) },
    { label: 'nbdkit file', uri: `nbd+unix:///?socket=${nbdkitSocket}`, sources: [image], ...await startServer('nbdkit', ['-f', '-r', '-U', nbdkitSocket, 'file', `file=${image}`], nbdkitSocket) },
  ];
}

const workloads: Workload[] = [
  {
    label: 'nbdcopy full read',
    unit: 'MiB/s',
    amount: sizeMiB,
    run: async (uri) => void (await execa('nbdcopy', [uri, 'null:'])),
  },
  {
    label: 'qemu-img convert full read',
    unit: 'MiB/s',
    amount: sizeMiB,
    run: async (uri) => void (await execa('qemu-img', ['convert', '-n', '-f', 'raw', uri, '--target-image-opts', `driver=null-co,size=${sizeMiB * MiB}`])),
  },
  {
    label: 'scattered 4 KiB reads, 16 in flight',
    unit: 'IOPS',
    amount: RANDOM_READS,
    // qemu-img bench has no random mode: a stride of 4 MiB + 4 KiB that wraps around the disk
    // touches pages all over it, hitting data and zero regions alike.
    run: async (uri) => void (await execa('qemu-img', ['bench', '-f', 'raw', '-c', String(RANDOM_READS), '-d', '16', '-s', '4096', '-S', String(4 * MiB + 4096), uri])),
  },
  {
    label: '4 KiB reads, 1 in flight',
    unit: 'IOPS',
    amount: RANDOM_READS / 2,
    run: async (uri) => void (await execa('qemu-img', ['bench', '-f', 'raw', '-c', String(RANDOM_READS / 2), '-d', '1', '-s', '4096', '-S', String(4 * MiB + 4096), uri])),
  },
];

async function main(): Promise<void> {
  await withDir(async ({ path: dir }) => {
    const image = join(dir, 'bench.raw');
    const repo = join(dir, 'repo');
    process.stderr.write(`creating a ${sizeMiB} MiB image (3/4 random data, 1/4 zeros)…\n`);
    await makeImage(image);
    const importStart = process.hrtime.bigint();
    await execa('node', [BIN, 'image', 'import', image, 'bench', '--repo', repo]);
    const importSeconds = Number(process.hrtime.bigint() - importStart) / 1e9;
    const servers = await startServers(dir, image, repo);
    const all = new Map<string, number[]>(); // `${workload}|${server}` → every run's seconds
    const leastCpu = new Map<string, number>(); // … → least server CPU seconds of a run
    try {
      for (const workload of workloads) {
        for (const server of servers) await workload.run(server.uri); // warm-up
        // Round-robin over servers, so that load from elsewhere hits all of them alike.
        for (let run = 0; run < runs; run++) {
          for (const server of servers) {
            // The benchmark compares servers, not disks: each run starts on a warm page cache.
            await warmPageCache(server.sources);
            const cpuBefore = await processCpuSeconds(server.pid);
            const start = process.hrtime.bigint();
            await workload.run(server.uri);
            const seconds = Number(process.hrtime.bigint() - start) / 1e9;
            const cpu = (await processCpuSeconds(server.pid)) - cpuBefore;
            const key = `${workload.label}|${server.label}`;
            all.set(key, [...(all.get(key) ?? []), seconds]);
            leastCpu.set(key, Math.min(leastCpu.get(key) ?? Infinity, cpu));
            process.stderr.write(`${workload.label} · ${server.label}: ${seconds.toFixed(3)} s, server CPU ${cpu.toFixed(2)} s\n`);
          }
        }
      }
    } finally {
      for (const server of servers) await stopServer(server);
    }

    const header = ['workload', ...servers.map((s) => s.label), 'lazyboot / qemu-nbd', 'median / median', 'goal'];
    const rows = workloads.map((workload) => {
      const rate = (server: string) => workload.amount / Math.min(...all.get(`${workload.label}|${server}`)!);
      const ratio = rate('lazyboot') / rate('qemu-nbd');
      const medianRatio = median(all.get(`${workload.label}|qemu-nbd`)!) / median(all.get(`${workload.label}|lazyboot`)!);
      const goal = workload.unit === 'MiB/s' ? 1.0 : 0.8;
      return [
        workload.label,
        ...servers.map((s) => `${rate(s.label).toFixed(0)} ${workload.unit}`),
        `${ratio.toFixed(2)}×`,
        `${medianRatio.toFixed(2)}×`,
        `≥ ${goal.toFixed(1)}× ${ratio >= goal ? 'met' : 'NOT met'}`,
      ];
    });
    const table = [header, header.map(() => '---'), ...rows].map((row) => `| ${row.join(' | ')} |`).join('\n');
    const cpuHeader = ['server CPU per run (least of the runs)', ...servers.map((s) => s.label)];
    const cpuRows = workloads.map((workload) => [workload.label, ...servers.map((s) => `${leastCpu.get(`${workload.label}|${s.label}`)!.toFixed(2)} s`)]);
    const cpuTable = [cpuHeader, cpuHeader.map(() => '---'), ...cpuRows].map((row) => `| ${row.join(' | ')} |`).join('\n');
    const versions = await Promise.all([
      versionOf('qemu-nbd', ['--version']),
      versionOf('nbdkit', ['--version']),
      versionOf('nbdcopy', ['--version']),
    ]);
    const report = [
      '# NBD server benchmark',
      '',
      `Code measured: ${await measuredCommit()}.`,
      '',
      `Written by \`scripts/bench-nbd\` on ${new Date().toISOString()}. ${sizeMiB} MiB raw image, 3/4 random`,
      'data and every 4th MiB zeros (sparse in the raw file, zero blocks in the repository); page cache',
      `warmed before each run (bench-kit.ts warmPageCache); best of ${runs} runs after one warm-up, servers interleaved. All servers on unix sockets.`,
      'The goal is judged on the best runs (the least disturbed by other load); the ratio of the',
      'medians is shown beside it, since a single run on this shared machine moves by up to ±40%.',
      '',
      table,
      '',
      'CPU time the server process used (all its threads; /proc, 10 ms resolution), a measure that',
      'other load on the machine disturbs less than wall-clock time:',
      '',
      cpuTable,
      '',
      `- Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Node ${process.version}; load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' ')}`,
      '  (other work shares this machine: compare columns of one run, not runs with each other).',
      `- Peers: ${versions.join('; ')}.`,
      `- lazyboot import of the same image: ${importSeconds.toFixed(1)} s (${(sizeMiB / importSeconds).toFixed(0)} MiB/s, hashing and fsync included).`,
      '- lazyboot: `lazyboot repo serve`, export `bench`; qemu-nbd: `qemu-nbd -r -f raw --shared=16 -t`; nbdkit: `nbdkit -r file`.',
      '- Full reads: `nbdcopy URI null:` and `qemu-img convert -n -f raw URI --target-image-opts driver=null-co`.',
      `- Small reads: \`qemu-img bench -f raw -s 4096 -S ${4 * MiB + 4096}\` (stride 4 MiB + 4 KiB, wrapping: scattered, not random), ${RANDOM_READS} reads at depth 16, ${RANDOM_READS / 2} at depth 1.`,
      '',
    ].join('\n');
    process.stdout.write(`\n${table}\n\n${cpuTable}\n`);
    await writeReport(outFile, report);
    process.stdout.write(`\nwritten to ${outFile}\n`);
  }, { unsafeCleanup: true });
}

main().catch((error: unknown) => {
  process.stderr.write(`bench-nbd: ${(error as Error).message}\n`);
  process.exitCode = 1;
});
