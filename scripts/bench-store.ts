// `scripts/bench-store`: the image repository on an object store (S3 API; a throwaway Ceph RGW,
// test/helpers/ceph.ts) against the repository directory, in one run, side by side:
//   cold     a cold full read of a synthetic image (bench-cold-read.ts, 256 MiB) through a fresh
//            copy-on-read device (`lazyboot disk serve` + nbdcopy, as bench-cor) from (dir) the
//            repository directory in-process, (serve) `lazyboot repo serve --repo s3://…` over NBD,
//            (s3) `--from s3://…` straight from the store;
//   boot     the Debian fixture's boot to first guest-ping from the same three (launch(), in-process,
//            as bench-boot's (a) at unlimited bandwidth; trace and host cache off: first boots);
//   trace    a boot from s3:// replaying the boot trace an earlier (untimed) boot recorded;
//   fleet    4 boots of one image at once from one bucket through 2 `repo serve` servers, each boot
//            `--from A --from B`;
//   gateway  what this machine's gateway does: 64 KiB and 4 MiB range reads through the SDK,
//            8 in flight (bench-s3-client's measure()), and the gateway's CPU per request and per MiB.
// Requests and bytes are counted by the gateway itself (bench-gateway.ts: RGW's perf counters).
// Writes store.md, store.json (the figures the scale model is computed from) and scale.md.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ensureFixture, repositoryRoot, type FixtureName } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { chooseAccelerator } from '../vmm/accel.js';
import { tuneProcess } from '../lib/process-tuning.js';
import { installSignalTeardown, registerCleanup } from '../lib/base/cleanup.js';
import { S3Storage } from '../lib/repo/storage/s3-storage.js';
import { startCephCluster } from '../test/helpers/ceph.js';
import { measuredCommit } from './bench-freshness.js';
import { processMemory, runningServers, startServer, stopServer, watchBoot, writeReport, type ServerProcess } from './bench-kit.js';
import { benchImageBytes, diskComplete, importBytes, serveDisk, timedCopy } from './bench-cold-read.js';
import { difference, GatewayCounter, NO_COUNTS } from './bench-gateway.js';
import { measure } from './bench-s3-client.js';
import { renderStoreReport, SOURCE_LABELS, type BootRun, type ColdRun, type GatewayProbe, type SourceKey, type StoreResults } from './bench-store-report.js';
import { writeScaleReport } from './bench-scale.js';

const ROOT = repositoryRoot();
const CLI = path.join(ROOT, 'bin', 'lazyboot.js');
const MiB = 1024 * 1024;
const BUCKET = 'bench-store';
const SECTIONS = ['cold', 'boot', 'trace', 'fleet', 'gateway'] as const;
/** A guest-like reader (bench-cor's (b)): one connection, 4 requests in flight. */
const READER = ['--connections=1', '--requests=4'];
const FLEET = { boots: 4, servers: 2 };

const say = (line: string) => process.stderr.write(`bench-store: ${line}\n`);

async function main(): Promise<void> {
  // launch() runs the COR device in this process: tuned like `lazyboot boot`, which it stands for.
  tuneProcess('data-path');
  installSignalTeardown();
  const args = await yargs(hideBin(process.argv))
    .option('only', { type: 'string', array: true, choices: SECTIONS, describe: 'sections to run (default all)' })
    .option('repeat', { type: 'number', default: 2, describe: 'runs per cold read and per boot; the median run is reported' })
    .option('quick', { type: 'boolean', default: false, describe: 'smoke run: a 32 MiB image and the tiny fixture instead of Debian; written under .cache/bench unless --out' })
    .option('size', { type: 'number', describe: 'cold-read image size in MiB (default 256; 32 with --quick)' })
    .option('out', { type: 'string', describe: 'the report (default bench/results/store.md); store.json and scale.md are written beside it' })
    .strict().help().parseAsync();
  if (!Number.isInteger(args.repeat) || args.repeat < 1) throw new Error(`--repeat ${args.repeat}: give a whole number of runs, 1 or more`);
  if (args.size !== undefined && !(Number.isInteger(args.size) && args.size >= 1)) throw new Error(`--size ${args.size}: give the image size in whole MiB, 1 or more`);
  const sizeMiB = args.size ?? (args.quick ? 32 : 256);
  const out = path.resolve(args.out ?? (args.quick ? path.join(ROOT, '.cache', 'bench', 'store-quick.md') : path.join(ROOT, 'bench', 'results', 'store.md')));
  const wanted = (section: (typeof SECTIONS)[number]) => !args.only || args.only.includes(section);
  const fixtureName: FixtureName = args.quick ? 'tiny' : 'debian';
  const agent = fixtureName === 'debian'; // the tiny image has no guest agent: its "ready" is boot-complete
  const timeoutMs = 15 * 60_000;
  const loadBefore = os.loadavg();
  const started = Date.now();

  const work = await mkdtemp(path.join(os.tmpdir(), 'lazyboot-bench-store-'));
  const servers: ServerProcess[] = [];
  // Ctrl-C or a failure: every server and the temp dir go (the cluster and VMs register themselves).
  const unregister = registerCleanup({
    release: async () => {
      for (const child of runningServers) child.kill('SIGKILL');
      await rm(work, { recursive: true, force: true });
    },
    releaseSync: () => { for (const child of runningServers) child.kill('SIGKILL'); },
  });
  const results: StoreResults = {
    commit: await measuredCommit(), date: new Date().toISOString(), cores: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '?',
    accel: (await chooseAccelerator('auto')).reason, quick: args.quick, repeat: args.repeat, imageBytes: sizeMiB * MiB,
    fixture: fixtureName, readyLabel: agent ? 'first guest-ping' : 'boot-complete', load: { before: loadBefore, after: loadBefore }, seconds: 0,
  };
  const cluster = await startCephCluster({ log: (line) => say(`ceph: ${line}`) });
  try {
    await cluster.createBucket(BUCKET);
    Object.assign(process.env, cluster.env()); // the CLI processes (repo serve, disk serve) inherit the endpoint and keys
    const gateway = await GatewayCounter.of(cluster);
    const dirRepo = path.join(work, 'repo');
    const s3Repo = `s3://${BUCKET}/repo-${randomBytes(3).toString('hex')}`;
    const serveSocket = (i: number) => path.join(work, `serve-${i}.sock`);
    const serveUri = (i: number) => `nbd+unix:///?socket=${serveSocket(i)}`;
    const sources: Record<SourceKey, string> = { dir: dirRepo, serve: serveUri(0), s3: s3Repo };

    // The two repositories hold the same images (import untimed; its gateway traffic reported).
    if (wanted('cold')) {
      say(`importing a ${sizeMiB} MiB image (1 block in 4 zero) into both repositories`);
      const content = benchImageBytes(sizeMiB * MiB);
      await importBytes(dirRepo, 'cold', content);
      const { counts } = await gateway.around(() => importBytes(s3Repo, 'cold', content));
      results.coldImport = counts;
    }
    const booting = wanted('boot') || wanted('trace') || wanted('fleet');
    if (booting) {
      const fixture = await ensureFixture(fixtureName, { log: say });
      say(`importing the ${fixtureName} fixture into both repositories`);
      await execa('node', [CLI, 'image', 'import', fixture.path, fixtureName, '--repo', dirRepo]);
      const importStarted = Date.now();
      const { counts } = await gateway.around(() => execa('node', [CLI, 'image', 'import', fixture.path, fixtureName, '--repo', s3Repo]));
      results.bootImport = { ...counts, seconds: (Date.now() - importStarted) / 1000, allocatedBytes: fixture.allocatedBytes };
    }
    // `repo serve` over the bucket: server 0 for (serve), servers 0 and 1 for the fleet. Started
    // once, like a fleet's long-running servers (their index and manifest caches warm after the first use).
    const serverCount = wanted('fleet') ? FLEET.servers : wanted('cold') || wanted('boot') ? 1 : 0;
    for (let i = 0; i < serverCount; i++) servers.push(await startServer('node', [CLI, 'repo', 'serve', '--repo', s3Repo, '--socket', serveSocket(i)], serveSocket(i)));

    if (wanted('cold')) results.cold = await coldReads(sources, gateway, work, args.repeat);
    if (wanted('boot')) results.boot = await boots(sources, gateway, { image: fixtureName, agent, timeoutMs, repeat: args.repeat });
    if (wanted('trace')) results.trace = await traceBoots(s3Repo, gateway, { image: fixtureName, agent, timeoutMs, repeat: args.repeat, traceDir: path.join(work, 'traces') });
    if (wanted('fleet')) results.fleet = await fleetBoot([serveUri(0), serveUri(1)], gateway, { image: fixtureName, agent, timeoutMs });
    if (wanted('gateway')) results.gateway = await probeGateway(gateway);
  } finally {
    for (const server of servers) await stopServer(server).catch(() => {});
    await cluster.stop();
    for (const child of runningServers) child.kill('SIGKILL');
    await rm(work, { recursive: true, force: true });
    unregister();
  }
  results.load.after = os.loadavg();
  results.seconds = (Date.now() - started) / 1000;
  await mkdir(path.dirname(out), { recursive: true });
  const json = out.replace(/\.md$/, '') + '.json';
  await writeReport(json, `${JSON.stringify(results, null, 2)}\n`);
  const scale = path.join(path.dirname(out), args.quick && !args.out ? 'scale-quick.md' : 'scale.md');
  const report = renderStoreReport(results, path.basename(json), path.basename(scale));
  await writeReport(out, report);
  await writeScaleReport(json, scale, path.basename(out));
  process.stdout.write(report);
  say(`written ${out}, ${json} and the scale model beside them (${results.seconds.toFixed(0)} s)`);
}

/** Cold full reads of the synthetic image from each source, round-robin (a load change hits all alike). */
async function coldReads(sources: Record<SourceKey, string>, gateway: GatewayCounter, work: string, repeat: number): Promise<ColdRun[]> {
  const runs: Record<SourceKey, ColdRun[]> = { dir: [], serve: [], s3: [] };
  for (let i = 0; i < repeat; i++) {
    for (const key of Object.keys(sources) as SourceKey[]) {
      say(`cold read ${i + 1}/${repeat} from ${SOURCE_LABELS[key]}`);
      const disk = path.join(work, `cold-${key}-${i}.raw`);
      const socket = path.join(work, `cold-${key}-${i}.sock`);
      const device = await serveDisk('cold', disk, sources[key], socket);
      let ms = 0;
      let peakRss = 0;
      const { counts } = await gateway.around(async () => {
        ms = await timedCopy(`nbd+unix:///disk?socket=${socket}`, READER);
        peakRss = (await processMemory(device.pid)).peak;
      });
      await stopServer(device);
      if (i === 0 && !(await diskComplete(disk))) throw new Error(`the cold read from ${SOURCE_LABELS[key]} did not make every block present`);
      await rm(disk, { force: true });
      await rm(`${disk}.map`, { force: true });
      runs[key].push({ source: key, ms, peakRss, counts: key === 'dir' ? NO_COUNTS : counts });
    }
  }
  return (Object.keys(runs) as SourceKey[]).map((key) => medianRun(runs[key], (run) => run.ms));
}

interface BootSettings { readonly image: string; readonly agent: boolean; readonly timeoutMs: number }

/** One first boot (trace and host cache off) from `from`, with the gateway's counts until ready. */
async function bootOnce(from: readonly string[], gateway: GatewayCounter, settings: BootSettings, trace: { dir: string; record: boolean } | false = false): Promise<BootRun & { traceOutcome?: string }> {
  const before = await gateway.sample();
  const started = Date.now();
  const vm = await launch({ image: settings.image, from, agent: settings.agent, memoryMiB: 512, timeoutMs: settings.timeoutMs, trace });
  try {
    const marks = await watchBoot(vm.events, vm.ready, () => 0);
    const counts = await gateway.sample();
    const stats = vm.stats();
    const outcome = trace && trace.record ? (await vm.traceOutcome)?.action : undefined;
    return {
      readyS: (marks.readyAt! - started) / 1000,
      storageReadyS: marks.storageReadyAt === undefined ? undefined : (marks.storageReadyAt - started) / 1000,
      counts: difference(counts, before),
      fetchRequests: stats.fetchRequests, fetchedBytes: stats.fetchedBytes, demandedBytes: stats.demandedBytes,
      waitedS: stats.guestWaitedMs / 1000, replayRequests: stats.replayRequests, replayFetchedBytes: stats.replayFetchedBytes,
      traceOutcome: outcome,
    };
  } finally {
    await vm.close();
  }
}

async function boots(sources: Record<SourceKey, string>, gateway: GatewayCounter, settings: BootSettings & { repeat: number }): Promise<Array<BootRun & { source: SourceKey }>> {
  const runs: Record<SourceKey, Array<BootRun & { source: SourceKey }>> = { dir: [], serve: [], s3: [] };
  for (let i = 0; i < settings.repeat; i++) {
    for (const key of Object.keys(sources) as SourceKey[]) {
      say(`boot ${i + 1}/${settings.repeat} of ${settings.image} from ${SOURCE_LABELS[key]}`);
      const run = await bootOnce([sources[key]], gateway, settings);
      runs[key].push({ ...run, source: key, counts: key === 'dir' ? NO_COUNTS : run.counts });
    }
  }
  return (Object.keys(runs) as SourceKey[]).map((key) => medianRun(runs[key], (run) => run.readyS));
}

/** Records the boot trace once (an untimed boot from s3://; the trace is stored in the bucket), then boots replaying it. */
async function traceBoots(s3Repo: string, gateway: GatewayCounter, settings: BootSettings & { repeat: number; traceDir: string }): Promise<BootRun> {
  say(`trace: recording the boot trace (untimed boot from ${s3Repo})`);
  const recorded = await bootOnce([s3Repo], gateway, settings, { dir: settings.traceDir, record: true });
  if (recorded.traceOutcome !== 'recorded') throw new Error(`the trace boot stored no trace (${recorded.traceOutcome ?? 'no outcome'})`);
  const runs: BootRun[] = [];
  for (let i = 0; i < settings.repeat; i++) {
    say(`trace: boot ${i + 1}/${settings.repeat} from s3:// replaying the trace`);
    runs.push(await bootOnce([s3Repo], gateway, settings, { dir: settings.traceDir, record: false }));
  }
  return medianRun(runs, (run) => run.readyS);
}

/** FLEET.boots boots at once, each from every `repo serve` server (the COR device's failover spreads over them). */
async function fleetBoot(from: readonly string[], gateway: GatewayCounter, settings: BootSettings): Promise<StoreResults['fleet']> {
  say(`fleet: ${FLEET.boots} boots at once through ${from.length} repo serve servers`);
  const before = await gateway.sample();
  const started = Date.now();
  const vms = await Promise.all(Array.from({ length: FLEET.boots }, () =>
    launch({ image: settings.image, from, agent: settings.agent, memoryMiB: 512, timeoutMs: settings.timeoutMs, trace: false })));
  try {
    const marks = await Promise.all(vms.map((vm) => watchBoot(vm.events, vm.ready, () => 0)));
    const counts = difference(await gateway.sample(), before);
    const readyS = marks.map((m) => (m.readyAt! - started) / 1000);
    const stats = vms.map((vm) => vm.stats());
    return { readyS, slowestS: Math.max(...readyS), counts, fetchRequests: stats.reduce((sum, s) => sum + s.fetchRequests, 0), fetchedBytes: stats.reduce((sum, s) => sum + s.fetchedBytes, 0), servers: from.length };
  } finally {
    await Promise.all(vms.map((vm) => vm.close()));
  }
}

/** Small and large range reads through the SDK (8 in flight): the gateway's rates here and its CPU per request and per MiB. */
async function probeGateway(gateway: GatewayCounter): Promise<GatewayProbe> {
  const storage = new S3Storage(`s3://${BUCKET}/probe`);
  try {
    const objectBytes = 64 * MiB;
    await storage.put('object', randomBytes(objectBytes));
    const reader = storage.openRange('object');
    const read = (offset: number, target: Buffer) => reader.readInto(target, 0, target.length, offset);
    const rows: GatewayProbe['rows'] = [];
    for (const [size, count] of [[64 * 1024, 400], [4 * MiB, 48]] as const) {
      say(`gateway: ${count} range reads of ${size / 1024} KiB, 8 in flight`);
      await measure('warm-up', size, 8, read);
      const { result, counts } = await gateway.around(() => measure('SDK', size, count, read));
      rows.push({ size, requests: count, requestsPerSecond: result.requestsPerSecond, mibPerSecond: (result.requestsPerSecond * size) / MiB, gatewayCpuMsPerRequest: (counts.gatewayCpuS * 1000) / counts.requests, clientCpuMsPerRequest: result.cpuMsPerRequest, counts });
    }
    // cpu per request = fixed + perMiB × MiB per request; two sizes give both.
    const [small, large] = rows as [GatewayProbe['rows'][number], GatewayProbe['rows'][number]];
    const perMiB = (large.gatewayCpuMsPerRequest - small.gatewayCpuMsPerRequest) / ((large.size - small.size) / MiB);
    const perRequest = small.gatewayCpuMsPerRequest - (perMiB * small.size) / MiB;
    return { rows, gatewayCpuMsPerMiB: perMiB, gatewayCpuMsPerRequest: Math.max(0, perRequest) };
  } finally {
    await storage.close();
  }
}

/** The median run by `key` (of an even count the lower middle, as bench-boot), with every run's value. */
function medianRun<T extends object>(runs: T[], key: (run: T) => number): T & { runs: number[] } {
  const sorted = [...runs].sort((x, y) => key(x) - key(y));
  return { ...sorted[Math.floor((sorted.length - 1) / 2)]!, runs: runs.map(key) };
}

main().catch((error: unknown) => {
  process.stderr.write(`bench-store: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
