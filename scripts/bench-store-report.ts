// What bench-store measured (the shape of store.json) and bench/results/store.md rendered from it:
// the cold reads and boots side by side with their ratios against the repository directory, the
// requests and bytes the gateway counted, the fleet boot, the gateway's own rates, and the goal line.
import type { GatewayCounts } from './bench-gateway.js';

export type SourceKey = 'dir' | 'serve' | 's3';

export const SOURCE_LABELS: Record<SourceKey, string> = {
  dir: '(dir) repository directory, in-process',
  serve: '(serve) `repo serve --repo s3://…` over NBD',
  s3: '(s3) `--from s3://…`, COR straight from the store',
};

/** The goal: a boot from S3 within this factor of a boot from the repository directory. */
export const BOOT_GOAL = 1.1;

interface Repeated {
  /** Every run's time (ms or s), in run order; the figures are those of the median run. */
  readonly runs?: number[];
}

export interface ColdRun extends Repeated {
  readonly source: SourceKey;
  readonly ms: number;
  /** Peak RSS of the COR device process. */
  readonly peakRss: number;
  readonly counts: GatewayCounts;
}

export interface BootRun extends Repeated {
  readonly source?: SourceKey;
  readonly readyS: number;
  readonly storageReadyS?: number;
  /** What the gateway did from the launch until ready (sampled right after). */
  readonly counts: GatewayCounts;
  /** The COR device's own view: its upstream requests and bytes, the image bytes the guest needed. */
  readonly fetchRequests: number;
  readonly fetchedBytes: number;
  readonly demandedBytes: number;
  readonly waitedS: number;
  readonly replayRequests: number;
  readonly replayFetchedBytes: number;
}

export interface GatewayProbe {
  readonly rows: Array<{ size: number; requests: number; requestsPerSecond: number; mibPerSecond: number; gatewayCpuMsPerRequest: number; clientCpuMsPerRequest: number; counts: GatewayCounts }>;
  /** The gateway's CPU per request = gatewayCpuMsPerRequest + gatewayCpuMsPerMiB × MiB read. */
  readonly gatewayCpuMsPerRequest: number;
  readonly gatewayCpuMsPerMiB: number;
}

export interface StoreResults {
  readonly commit: string;
  readonly date: string;
  readonly cores: number;
  readonly cpuModel: string;
  readonly accel: string;
  readonly quick: boolean;
  readonly repeat: number;
  readonly imageBytes: number;
  readonly fixture: string;
  readonly readyLabel: string;
  load: { before: number[]; after: number[] };
  seconds: number;
  coldImport?: GatewayCounts;
  bootImport?: GatewayCounts & { seconds: number; allocatedBytes: number };
  cold?: ColdRun[];
  boot?: Array<BootRun & { source: SourceKey }>;
  trace?: BootRun;
  fleet?: { readyS: number[]; slowestS: number; counts: GatewayCounts; fetchRequests: number; fetchedBytes: number; servers: number };
  gateway?: GatewayProbe;
}

const MiB = 1024 * 1024;
const mib = (bytes: number) => (bytes / MiB).toFixed(1);
const ratio = (value: number, base: number | undefined) => (base ? `${(value / base).toFixed(2)}×` : '—');
const perRequest = (counts: GatewayCounts) => (counts.gets > 0 ? `${(counts.getBytes / counts.gets / 1024).toFixed(0)} KiB` : '—');

export function renderStoreReport(r: StoreResults, jsonName: string, scaleName: string): string {
  const lines: string[] = [
    '# Repository on an object store (`scripts/bench-store`)',
    '',
    `${r.date}; ${r.cores} cores (${r.cpuModel}); ${r.accel}; load average ${r.load.before.map((l) => l.toFixed(1)).join(' ')} at start, ` +
      `${r.load.after.map((l) => l.toFixed(1)).join(' ')} at the end (the machine may be shared: compare within a table); ${r.seconds.toFixed(0)} s in all${r.quick ? '; **--quick smoke run**' : ''}.`,
    `Code measured: ${r.commit}.`,
    '',
    'The store is a throwaway single-node Ceph 16 cluster (memstore OSD, one radosgw on loopback, test/helpers/ceph.ts) on the same cores as everything else. ' +
      '**Requests and bytes are counted by the gateway itself**: radosgw\'s perf counters (`ceph --admin-daemon …/client.rgw.a.asok perf dump rgw`: `req` = every HTTP request, ' +
      '`get_b` = object bytes sent) read before and after each measurement, so they include every request the step made (manifest, indexes, data; HEAD/LIST too), and nothing else ran against the gateway meanwhile. ' +
      `The directory repository makes no gateway requests. The figures the scale model uses are in [${jsonName}](${jsonName}); the model: [${scaleName}](${scaleName}).`,
    '',
  ];
  if (r.cold) {
    const dir = r.cold.find((c) => c.source === 'dir');
    const time = (c: ColdRun) => c.ms;
    lines.push(
      `## Cold read of a ${mib(r.imageBytes)} MiB image`,
      '',
      `64 KiB blocks, one in four zero, the rest random; a fresh COR device (\`lazyboot disk serve --no-cache\`) read whole by \`nbdcopy --no-extents --connections=1 --requests=4\` (bench-cor's guest-like reader); median run of ${r.repeat} (of two, the faster), sources taken round-robin; \`repo serve\` started once before (as a fleet's server runs).`,
      '',
      '| source | cold read | vs (dir) | gateway requests | GET MiB at the gateway | MiB per GET | gateway CPU | COR device peak RSS | runs (ms) |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...r.cold.map((c) => `| ${SOURCE_LABELS[c.source]} | ${time(c).toFixed(0)} ms (${(r.imageBytes / MiB / (time(c) / 1000)).toFixed(0)} MiB/s) | ${ratio(time(c), dir && time(dir))} | ${c.counts.requests} | ${mib(c.counts.getBytes)} | ${perRequest(c.counts)} | ${c.counts.gatewayCpuS.toFixed(2)} s | ${(c.peakRss / MiB).toFixed(0)} MiB | ${(c.runs ?? [c.ms]).map((v) => v.toFixed(0)).join(' / ')} |`),
      '',
    );
  }
  const bootRows: Array<[string, BootRun]> = (r.boot ?? []).map((b) => [SOURCE_LABELS[b.source], b]);
  if (r.trace) bootRows.push(['(s3+t) `--from s3://…`, second boot replaying the boot trace', r.trace]);
  const dirBoot = r.boot?.find((b) => b.source === 'dir');
  const ready = (b: BootRun) => b.readyS;
  if (bootRows.length > 0) {
    lines.push(
      `## Boot of the ${r.fixture} fixture to ${r.readyLabel}`,
      '',
      `launch() in this process (as \`lazyboot boot\`), 512 MiB guest, first boots (boot trace and host cache off) but for (s3+t), which replays the trace an earlier untimed boot from s3:// recorded (stored in the bucket); median run of ${r.repeat} (of two, the faster, as bench-boot), sources round-robin. ` +
        'Gateway counts run from the launch to ready (sampled right after it). "Device fetches" is the COR device\'s own count of upstream reads (one may become several range GETs at the gateway, or one GET serve several).',
      '',
      `| source | storage-ready (s) | ${r.readyLabel} (s) | vs (dir) | gateway requests | GET MiB at the gateway | MiB per GET | device fetches | MiB the device fetched | MiB the guest needed | guest waited (s) | runs (s) |`,
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...bootRows.map(([label, b]) => `| ${label} | ${b.storageReadyS?.toFixed(1) ?? '—'} | ${ready(b).toFixed(1)} | ${ratio(ready(b), dirBoot && ready(dirBoot))} | ${b.counts.requests} | ${mib(b.counts.getBytes)} | ${perRequest(b.counts)} | ${b.fetchRequests}${b.replayRequests ? ` (+${b.replayRequests} replay)` : ''} | ${mib(b.fetchedBytes)} | ${mib(b.demandedBytes)} | ${b.waitedS.toFixed(1)} | ${(b.runs ?? [b.readyS]).map((v) => v.toFixed(1)).join(' / ')} |`),
      '',
    );
  }
  if (r.fleet) {
    const alone = r.boot?.find((b) => b.source === 'serve');
    const perBoot = (value: number) => (value / r.fleet!.readyS.length);
    lines.push(
      `## ${r.fleet.readyS.length} boots at once from one bucket through ${r.fleet.servers} \`repo serve\` servers`,
      '',
      `Each boot \`--from\` both servers (the COR device stripes and fails over across them); first boots, no host cache; started together; one run.`,
      '',
      '| boots | each to ready (s) | slowest (s) | slowest vs one boot through (serve) alone | gateway requests (per boot) | GET MiB at the gateway (per boot) | device fetches (all) |',
      '| ---: | --- | ---: | ---: | ---: | ---: | ---: |',
      `| ${r.fleet.readyS.length} | ${r.fleet.readyS.map((s) => s.toFixed(1)).join(' / ')} | ${r.fleet.slowestS.toFixed(1)} | ${ratio(r.fleet.slowestS, alone && ready(alone))} | ${r.fleet.counts.requests} (${perBoot(r.fleet.counts.requests).toFixed(0)}) | ${mib(r.fleet.counts.getBytes)} (${mib(perBoot(r.fleet.counts.getBytes))}) | ${r.fleet.fetchRequests} |`,
      '',
    );
  }
  if (r.gateway) {
    lines.push(
      '## The gateway on this machine',
      '',
      'Range reads of one 64 MiB object through the SDK (lazyboot\'s S3 storage), 8 in flight (bench-s3-client\'s measure()); client, gateway and OSD share the same cores, so the rates are what this whole machine does, a floor for a gateway host of its own.',
      '',
      '| read size | requests | requests/s | MiB/s | gateway CPU per request | client CPU per request |',
      '| ---: | ---: | ---: | ---: | ---: | ---: |',
      ...r.gateway.rows.map((row) => `| ${row.size / 1024} KiB | ${row.requests} | ${row.requestsPerSecond.toFixed(0)} | ${row.mibPerSecond.toFixed(0)} | ${row.gatewayCpuMsPerRequest.toFixed(2)} ms | ${row.clientCpuMsPerRequest.toFixed(2)} ms |`),
      '',
      `From the two sizes: the gateway spends **${r.gateway.gatewayCpuMsPerRequest.toFixed(2)} ms CPU per request + ${r.gateway.gatewayCpuMsPerMiB.toFixed(2)} ms per MiB** (radosgw alone; the OSD's memstore is not a disk).`,
      '',
    );
  }
  if (r.bootImport || r.coldImport) {
    const parts: string[] = [];
    if (r.coldImport) parts.push(`the ${mib(r.imageBytes)} MiB image: ${r.coldImport.requests} requests, ${mib(r.coldImport.putBytes)} MiB put`);
    if (r.bootImport) parts.push(`the ${r.fixture} fixture (${mib(r.bootImport.allocatedBytes)} MiB allocated): ${r.bootImport.seconds.toFixed(1)} s, ${r.bootImport.requests} requests, ${mib(r.bootImport.putBytes)} MiB put`);
    lines.push(`Imports into the bucket (untimed above): ${parts.join('; ')}.`, '');
  }
  lines.push('## Against the goal', '', goalLine(r), '');
  return lines.join('\n');
}

/** "Boot from S3 within 1.1× of the directory repository": each S3 way, and met only if both are. */
export function goalLine(r: StoreResults): string {
  const ready = (b: BootRun) => b.readyS;
  const dir = r.boot?.find((b) => b.source === 'dir');
  const fromS3 = (r.boot ?? []).filter((b) => b.source !== 'dir');
  if (!dir || fromS3.length === 0) return `- Boot from S3 within ${BOOT_GOAL}× of the directory repository: not measured in this run (--only without boot).`;
  const parts = fromS3.map((b) => `${b.source === 's3' ? '`--from s3://`' : '`repo serve` over S3'} ${(ready(b) / ready(dir)).toFixed(2)}×`);
  const met = fromS3.every((b) => ready(b) / ready(dir) <= BOOT_GOAL);
  return `- Boot from S3 within ${BOOT_GOAL}× of the directory repository (${r.readyLabel}, median run of ${r.repeat}): ${parts.join(', ')} — **${met ? 'met' : 'NOT met'}**${r.quick ? ' (quick run: the tiny fixture, not the goal\'s Debian boot)' : ''}.`;
}
