// The scale model (bench/results/scale.md), computed from what bench-store measured (store.json):
// 1,000 targets booting at once — requests/s and GB/s at the store without and with the boot trace's
// prefetch and with host caches, where one gateway and a Ceph cluster of stated size saturate, and
// how it shards. Every figure not measured is an assumption, named in ASSUMED and labelled as such.
// bench-store calls writeScaleReport() after each run; `node dist/scripts/bench-scale.js [JSON [OUT]]`
// re-derives it from a stored run.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { repositoryRoot } from '../fixtures/build.js';
import { writeReport } from './bench-kit.js';
import type { GatewayCounts } from './bench-gateway.js';
import type { StoreResults } from './bench-store-report.js';

const MiB = 1024 * 1024;
const GB = 1e9;

/** Not measured here: stated, and labelled as assumptions in the report. */
export const ASSUMED = {
  targets: 1000,
  /** Seconds over which the 1,000 boots' store traffic falls: all started at once, each fetching through its boot. */
  windowsS: [60, 20],
  /** Targets (VMs) per host sharing one host block cache. */
  targetsPerHost: 10,
  /** Cores one gateway host gives radosgw; the measured CPU cost per request and per MiB scales linearly with them. */
  gatewayCores: 16,
  /** A gateway host's network: 25 Gbit/s. */
  gatewayNicBytesPerS: 25e9 / 8,
  /** OSDs of the stated cluster, and what one (NVMe) serves in large reads. */
  osds: 24,
  osdReadBytesPerS: 1e9,
  /** Bytes over the host link when several boots share a host cache, over one boot's (if boot.md gives none). */
  hostCacheFactor: 1.2,
};

interface Load { readonly label: string; readonly unit: 'target' | 'host'; readonly requests: number; readonly bytes: number; readonly source: string }

/** bench/results/boot.md's measured host-cache factor: "(k)/(a) = X× one boot's", if present. */
async function hostCacheFactor(root: string): Promise<{ factor: number; source: string }> {
  const text = await readFile(path.join(root, 'bench', 'results', 'boot.md'), 'utf8').catch(() => '');
  const found = /bytes over the link \(k\)\/\(a\) = ([0-9.]+)×/.exec(text);
  return found ? { factor: Number(found[1]), source: `measured: bench/results/boot.md, 4 boots through one host cache fetched ${found[1]}× one boot's bytes` } : { factor: ASSUMED.hostCacheFactor, source: `assumed ${ASSUMED.hostCacheFactor}× (boot.md has no (k) row)` };
}

export async function renderScale(results: StoreResults, jsonName: string, storeName: string): Promise<string> {
  const first = results.boot?.find((b) => b.source === 's3');
  const served = results.boot?.find((b) => b.source === 'serve');
  const traced = results.trace;
  const probe = results.gateway;
  if (!first || !probe) {
    return `# Scale model\n\nNot computed: ${jsonName} lacks the ${!first ? 'boot from s3:// (`--only boot`)' : 'gateway probe (`--only gateway`)'}; run scripts/bench-store in full.\n`;
  }
  const cache = await hostCacheFactor(repositoryRoot());
  const hosts = ASSUMED.targets / ASSUMED.targetsPerHost;
  const of = (counts: GatewayCounts) => ({ requests: counts.requests, bytes: counts.getBytes });
  const loads: Load[] = [
    { label: 'first boots, `--from s3://` (no trace, no host cache)', unit: 'target', ...of(first.counts), source: 'boot (s3)' },
  ];
  if (served) loads.push({ label: 'first boots through a `repo serve` tier (its caches warm)', unit: 'target', ...of(served.counts), source: 'boot (serve)' });
  if (traced) loads.push({ label: 'second boots with trace prefetch, `--from s3://`', unit: 'target', ...of(traced.counts), source: 'boot (s3+t)' });
  loads.push({ label: `host caches, ${ASSUMED.targetsPerHost} targets per host (first boots)`, unit: 'host', requests: first.counts.requests * cache.factor, bytes: first.counts.getBytes * cache.factor, source: `boot (s3) × ${cache.factor}; requests scaled alike: assumed` });
  if (traced) loads.push({ label: `host caches + trace prefetch`, unit: 'host', requests: traced.counts.requests * cache.factor, bytes: traced.counts.getBytes * cache.factor, source: `boot (s3+t) × ${cache.factor}; requests scaled alike: assumed` });

  const cpuMs = (requests: number, bytes: number) => requests * probe.gatewayCpuMsPerRequest + (bytes / MiB) * probe.gatewayCpuMsPerMiB;
  const small = probe.rows[0]!;
  const large = probe.rows[probe.rows.length - 1]!;
  const window = ASSUMED.windowsS[0]!;
  const gatewayCpuPerS = ASSUMED.gatewayCores * 1000;
  const clusterBytesPerS = ASSUMED.osds * ASSUMED.osdReadBytesPerS;

  const rows = loads.map((load) => {
    const units = load.unit === 'host' ? hosts : ASSUMED.targets;
    const totalRequests = units * load.requests;
    const totalBytes = units * load.bytes;
    const rates = ASSUMED.windowsS.map((w) => `${(totalRequests / w).toFixed(0)} req/s, ${(totalBytes / w / GB).toFixed(2)} GB/s`);
    const cpuPerS = cpuMs(totalRequests, totalBytes) / window;
    const gateways = Math.max(cpuPerS / gatewayCpuPerS, totalBytes / window / ASSUMED.gatewayNicBytesPerS);
    const thisMachine = Math.max(totalRequests / window / small.requestsPerSecond, totalBytes / window / MiB / large.mibPerSecond);
    return `| ${load.label} | ${units} ${load.unit}s × ${load.requests.toFixed(0)} requests, ${(load.bytes / MiB).toFixed(1)} MiB (${load.source}) | ${(totalBytes / GB).toFixed(1)} GB | ${rates.join(' | ')} | ${(cpuPerS / 1000).toFixed(1)} cores → **${Math.ceil(gateways)}** | ${Math.ceil(thisMachine)} | ${((totalBytes / window) / clusterBytesPerS * 100).toFixed(0)}% |`;
  });

  const perBootCpu = cpuMs(first.counts.requests, first.counts.getBytes);
  const oneGatewayTargets = (gatewayCpuPerS * window) / perBootCpu;
  const thisMachineTargets = Math.min((small.requestsPerSecond * window) / Math.max(1, first.counts.requests), (large.mibPerSecond * MiB * window) / Math.max(1, first.counts.getBytes));
  const requestShare = (100 * first.counts.requests * probe.gatewayCpuMsPerRequest) / perBootCpu;
  const clusterTargets = (clusterBytesPerS * window) / Math.max(1, first.counts.getBytes);

  return [
    '# Scale model: 1,000 targets booting at once',
    '',
    `Computed by scripts/bench-scale.ts from [${jsonName}](${jsonName}) (bench-store's run of ${results.date}, code ${results.commit}; ${results.fixture} fixture${results.quick ? ', **--quick smoke run: not the Debian figures**' : ''}); re-derived on every bench-store run. Measured figures: [${storeName}](${storeName}).`,
    '',
    '## Inputs',
    '',
    '**Measured** (this machine, a single-node Ceph 16 with one radosgw, requests and bytes counted by the gateway):',
    `- a first boot from \`--from s3://\`: **${first.counts.requests} requests, ${(first.counts.getBytes / MiB).toFixed(1)} MiB** at the gateway until ${results.readyLabel}` +
      (served ? `; through \`repo serve\`: ${served.counts.requests} requests, ${(served.counts.getBytes / MiB).toFixed(1)} MiB` : '') +
      (traced ? `; a second boot replaying the boot trace from s3://: ${traced.counts.requests} requests, ${(traced.counts.getBytes / MiB).toFixed(1)} MiB (the trace's prefetch merges reads into fewer, larger GETs)` : '') + ';',
    `- the gateway's CPU: ${probe.gatewayCpuMsPerRequest.toFixed(2)} ms per request + ${probe.gatewayCpuMsPerMiB.toFixed(2)} ms per MiB (radosgw, from 64 KiB and 4 MiB range reads); this whole 2-core machine as a gateway: ${small.requestsPerSecond.toFixed(0)} requests/s of 64 KiB, ${large.mibPerSecond.toFixed(0)} MiB/s in 4 MiB reads (client on the same cores: a floor);`,
    `- host caches: ${cache.source}.`,
    '',
    '**Assumed** (not measured here; change ASSUMED in scripts/bench-scale.ts):',
    `- ${ASSUMED.targets} targets start at once and their boots' store traffic spreads evenly over a **${ASSUMED.windowsS.join(' s or ')} s window** (a boot fetches through its whole boot; real traffic is front-loaded, so peaks run higher than these averages);`,
    `- ${ASSUMED.targetsPerHost} targets per host share one host cache (${hosts} hosts);`,
    `- a gateway host gives radosgw ${ASSUMED.gatewayCores} cores at the measured per-request and per-MiB cost (linear in cores) and has a 25 Gbit/s NIC (${(ASSUMED.gatewayNicBytesPerS / GB).toFixed(1)} GB/s);`,
    `- the Ceph cluster: ${ASSUMED.osds} NVMe OSDs at ${(ASSUMED.osdReadBytesPerS / GB).toFixed(1)} GB/s of large reads each (${(clusterBytesPerS / GB).toFixed(0)} GB/s); reads go to the primary OSD only, so replication does not multiply them.`,
    '',
    '## Load at the store',
    '',
    `| case | per target or per host | total bytes | over ${ASSUMED.windowsS[0]} s | over ${ASSUMED.windowsS[1]} s | gateway CPU over ${window} s → gateways of ${ASSUMED.gatewayCores} cores (assumed) | gateways like this 2-core machine (measured rates) | of the assumed cluster's read bandwidth |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    '## Where it saturates',
    '',
    `- **One gateway** (${ASSUMED.gatewayCores} cores, assumed) serves about **${oneGatewayTargets.toFixed(0)} first boots per ${window} s** from \`--from s3://\` (${(perBootCpu / 1000).toFixed(2)} CPU-seconds of radosgw per boot, measured); this 2-core machine as a gateway about ${thisMachineTargets.toFixed(0)}. ` +
      `Requests make ${requestShare.toFixed(0)}% of that CPU and bytes the rest: fewer, larger GETs move the ceiling more than fewer bytes do.`,
    `- **The cluster** (assumed ${ASSUMED.osds} OSDs) reads about ${clusterTargets.toFixed(0)} first boots' bytes per ${window} s; with host caches the store sees one boot's bytes per host, not per target (${ASSUMED.targetsPerHost}× less).`,
    '- **One image is a hot set**: every target reads the same packs. radosgw stores an object as 4 MiB RADOS objects spread over the placement groups, so one pack\'s reads already spread over the OSDs; a single small image (a few hundred MiB) still lands on few of them, and many targets reading it at once want host caches (or a `repo serve` tier with its own cache in front).',
    '',
    '## How it shards',
    '',
    `- **Gateways**: radosgw is stateless; run several behind DNS or a load balancer, or give each \`repo serve\` its own (\`repo serve --repo s3://… --s3-endpoint http://gw-N\`) and list the servers in each target's \`--from nbd://A --from nbd://B\`: the COR device stripes its fetches over them and fails over when one goes (measured: the fleet table in ${storeName}).`,
    '- **Stateless `repo serve` tiers**: a server holds only bounded caches (indexes, manifests) and can be added, killed or restarted at any time; targets see a list, not a single server.',
    '- **Buckets and prefixes**: reads are GETs by key and do not touch the bucket index; writers (imports, snapshot sessions, create-only version claims) do, and listings walk it. One repository per prefix (`s3://BUCKET/PREFIX`) or per bucket splits writers and lets a site keep its images in its own bucket near its own gateways; a target reads from whichever repository lists the image.',
    `- **Host caches first**: at ${ASSUMED.targetsPerHost} targets per host the store sees about a ${ASSUMED.targetsPerHost === 10 ? 'tenth' : `1/${ASSUMED.targetsPerHost}`} of the requests and bytes (table above). ` +
      (traced ? (traced.counts.requests < first.counts.requests
        ? `The trace's prefetch cut a boot's requests at the gateway from ${first.counts.requests} to ${traced.counts.requests}.`
        : `The trace's prefetch did **not** cut a boot's requests at the gateway in this run (${traced.counts.requests} against ${first.counts.requests} for a first boot, ${(traced.counts.getBytes / Math.max(1, traced.counts.gets) / 1024).toFixed(0)} KiB per GET): its replay's reads reach the store as GETs no larger than the first boot's, so here it does not lighten the store's load.`)
        : 'The trace was not measured in this run.'),
    '',
  ].join('\n');
}

export async function writeScaleReport(jsonPath: string, outPath: string, storeName = 'store.md'): Promise<void> {
  const results = JSON.parse(await readFile(jsonPath, 'utf8')) as StoreResults;
  await writeReport(outPath, await renderScale(results, path.basename(jsonPath), storeName));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const root = repositoryRoot();
  const json = process.argv[2] ?? path.join(root, 'bench', 'results', 'store.json');
  const out = process.argv[3] ?? path.join(path.dirname(json), 'scale.md');
  writeScaleReport(json, out).then(() => process.stderr.write(`bench-scale: written ${out}\n`), (error: unknown) => {
    process.stderr.write(`bench-scale: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
