// What one S3 request costs lazyboot's process: range reads through the repository's S3 storage
// (the official SDK, signed) side by side with plain keep-alive HTTP GETs of the same ranges (no
// SDK, no signature; the bucket is made public-read for them), on a throwaway Ceph cluster.
// Client CPU per request (user + system of this process) and requests/s, 8 in flight.
// Writes bench/results/s3-client.md; bench-store reuses measure().
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { installSignalTeardown } from '../lib/base/cleanup.js';
import { S3Storage } from '../lib/repo/storage/s3-storage.js';
import { startCephCluster } from '../test/helpers/ceph.js';
import { writeReport } from './bench-kit.js';

const BUCKET = 'bench';
export const OBJECT_BYTES = 64 * 1024 * 1024;
export const IN_FLIGHT = 8;
const SIZES = [64 * 1024, 1024 * 1024, 4 * 1024 * 1024];

export interface Row {
  client: string;
  size: number;
  requests: number;
  cpuMsPerRequest: number;
  requestsPerSecond: number;
}

/** Runs `requests` reads of `size` bytes at random aligned offsets, IN_FLIGHT at once. */
export async function measure(client: string, size: number, requests: number, read: (offset: number, target: Buffer) => Promise<void>): Promise<Row> {
  const slots = OBJECT_BYTES / size;
  const buffers = Array.from({ length: IN_FLIGHT }, () => Buffer.allocUnsafe(size));
  let next = 0;
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  await Promise.all(buffers.map(async (buffer) => {
    while (next < requests) {
      next++;
      await read(Math.floor(Math.random() * slots) * size, buffer);
    }
  }));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  return { client, size, requests, cpuMsPerRequest: (used.user + used.system) / 1000 / requests, requestsPerSecond: requests / seconds };
}

function plainGet(agent: http.Agent, endpoint: URL, path: string, offset: number, target: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = http.get({ agent, host: endpoint.hostname, port: endpoint.port, path, headers: { Range: `bytes=${offset}-${offset + target.length - 1}` } }, (response) => {
      if (response.statusCode !== 206) {
        response.resume();
        reject(new Error(`GET ${path}: HTTP ${response.statusCode}`));
        return;
      }
      let at = 0;
      response.on('data', (chunk: Buffer) => { chunk.copy(target, at); at += chunk.length; });
      response.on('end', () => (at === target.length ? resolve() : reject(new Error(`short read: ${at}`))));
      response.on('error', reject);
    });
    request.on('error', reject);
  });
}

async function main(): Promise<void> {
  installSignalTeardown();
  const requests = Number(process.argv[2] ?? 400);
  const cluster = await startCephCluster({ log: (line) => process.stderr.write(`ceph: ${line}\n`) });
  const rows: Row[] = [];
  const loadBefore = loadavg()[0]!;
  try {
    await cluster.createBucket(BUCKET);
    Object.assign(process.env, cluster.env());
    const storage = new S3Storage(`s3://${BUCKET}/bench`);
    try {
      await storage.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'bench/object', Body: randomBytes(OBJECT_BYTES), ContentLength: OBJECT_BYTES, ACL: 'public-read' }));

      const reader = storage.openRange('object');
      const agent = new http.Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
      const endpoint = new URL(cluster.endpoint);
      for (const size of SIZES) {
        const count = Math.max(40, Math.round(requests * (64 * 1024) / size) * (size >= 1024 * 1024 ? 4 : 1));
        await measure('warm-up', size, 20, (offset, target) => reader.readInto(target, 0, target.length, offset));
        rows.push(await measure('SDK (S3Storage range read)', size, count, (offset, target) => reader.readInto(target, 0, target.length, offset)));
        rows.push(await measure('plain HTTP GET (keep-alive)', size, count, (offset, target) => plainGet(agent, endpoint, `/${BUCKET}/bench/object`, offset, target)));
        process.stderr.write(`${size / 1024} KiB done\n`);
      }
      agent.destroy();
    } finally {
      await storage.close();
    }
  } finally {
    await cluster.stop();
  }
  const commit = (await execa('git', ['rev-parse', '--short', 'HEAD'], { reject: false })).stdout;
  const table = [
    '| client | read size | requests | client CPU per request | requests/s (8 in flight) |',
    '|---|---|---|---|---|',
    ...rows.map((row) => `| ${row.client} | ${row.size / 1024} KiB | ${row.requests} | ${row.cpuMsPerRequest.toFixed(2)} ms | ${row.requestsPerSecond.toFixed(0)} |`),
  ];
  const ratio = SIZES.map((size) => {
    const sdk = rows.find((row) => row.size === size && row.client.startsWith('SDK'))!;
    const plain = rows.find((row) => row.size === size && row.client.startsWith('plain'))!;
    return `${size / 1024} KiB: SDK ${(sdk.cpuMsPerRequest / plain.cpuMsPerRequest).toFixed(2)}x the CPU of plain HTTP`;
  });
  const report = [
    '# S3 client cost per request (scripts/bench-s3-client.ts)',
    '',
    `Commit ${commit}, ${new Date().toISOString()}, load average ${loadBefore.toFixed(1)} at start, ${loadavg()[0]!.toFixed(1)} at end (2 cores, shared).`,
    `Throwaway Ceph 16 cluster (memstore OSD, radosgw beast) on loopback; one 64 MiB object; random aligned range reads, ${IN_FLIGHT} in flight.`,
    'CPU is this process only (the gateway\'s own CPU is not counted).',
    '',
    ...table,
    '',
    ...ratio.map((line) => `- ${line}`),
    '',
  ].join('\n');
  await writeReport('bench/results/s3-client.md', report);
  process.stdout.write(report);
}

// Run as a script (bench-store imports measure() from here).
if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  main().then(() => process.exit(0), (error: unknown) => {
    process.stderr.write(`bench-s3-client: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  });
}
