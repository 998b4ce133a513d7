// Copy-on-read straight from an s3:// repository, no lazyboot server in between, against a real
// Ceph RGW (test/helpers/ceph.ts; one cluster for the file): a fill is fetched in ranges of MiBs
// (GET requests counted at the gateway), survives the gateway being stopped and started again,
// the tiny fixture boots with `lazyboot boot --from s3://` (again from the host cache in front of
// the bucket), Debian runs a command with `lazyboot run --from s3://`. The endpoint is given with
// --s3-endpoint only (not in the environment).
import test from 'ava';
import { execa } from 'execa';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startCephCluster, type CephCluster } from './helpers/ceph.js';
import { lazyboot, inTempDir } from './helpers/repo-cli.js';
import { startServing } from './helpers/served-process.js';
import { writeDisk, MiB } from './helpers/repo-fixtures.js';
import { ensureFixture } from '../fixtures/build.js';
import { BlockMap } from '../lib/map/block-map.js';

const BUCKET = 'lazyboot-boot';
const BLOCK = 64 * 1024;
let cluster: CephCluster | undefined;
let endpoint = '';

test.before(async () => {
  // No skip: a cluster that cannot start fails every test here with the reason.
  cluster = await startCephCluster();
  await cluster.createBucket(BUCKET);
  // Keys and region for the CLI processes; the endpoint only through --s3-endpoint.
  const { AWS_ENDPOINT_URL, ...keys } = cluster.env();
  endpoint = AWS_ENDPOINT_URL!;
  Object.assign(process.env, keys);
  delete process.env.AWS_ENDPOINT_URL;
  delete process.env.AWS_ENDPOINT_URL_S3;
});

test.after.always(async () => {
  await cluster?.stop();
});

const prefix = (name: string): string => `s3://${BUCKET}/${name}-${randomBytes(3).toString('hex')}`;

/** `size` bytes of random data where every fourth 64 KiB block is zero (not stored, read along). */
function quarterZeroDisk(size: number): Buffer {
  const bytes = randomBytes(size);
  for (let at = BLOCK; at < size; at += 4 * BLOCK) bytes.fill(0, at, at + BLOCK);
  return bytes;
}

async function importInto(repo: string, file: string, name: string): Promise<void> {
  const imported = await lazyboot(['image', 'import', file, name, '--repo', repo, '--s3-endpoint', endpoint]);
  if (imported.exitCode !== 0) throw new Error(`import failed: ${imported.stderr}`);
}

/** Blocks of `disk` that its map marks present and the guest did not write, each compared with `image`. */
async function presentBlocksMatch(disk: string, image: string): Promise<{ present: number; mismatched: number[] }> {
  const map = await BlockMap.open(`${disk}.map`, async () => {});
  const [local, original] = await Promise.all([open(disk, 'r'), open(image, 'r')]);
  try {
    const a = Buffer.alloc(BLOCK);
    const b = Buffer.alloc(BLOCK);
    const mismatched: number[] = [];
    let present = 0;
    for (let block = 0; block < map.blockCount; block++) {
      if (!map.isPresent(block)) continue;
      present++;
      if (map.isModified(block)) continue;
      const [x, y] = await Promise.all([local.read(a, 0, BLOCK, block * BLOCK), original.read(b, 0, BLOCK, block * BLOCK)]);
      if (x.bytesRead !== y.bytesRead || !a.subarray(0, x.bytesRead).equals(b.subarray(0, y.bytesRead))) mismatched.push(block);
    }
    return { present, mismatched };
  } finally {
    await Promise.all([local.close(), original.close(), map.close()]);
  }
}

test.serial('a cold fill from s3:// reads in ranges of MiBs: GETs at the gateway bounded, the disk byte-identical', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const repo = prefix('ranges');
    const image = await writeDisk(join(dir, 'image.raw'), quarterZeroDisk(32 * MiB));
    await importInto(repo, image, 'ranges');
    const disk = join(dir, 'disk.raw');
    const before = await cluster!.gatewayCounters();
    const fill = await lazyboot(['disk', 'fill', '--disk', disk, '--image', 'ranges', '--from', repo, '--s3-endpoint', endpoint, '--no-cache']);
    const after = await cluster!.gatewayCounters();
    t.is(fill.exitCode, 0, fill.stderr);
    t.true((await readFile(disk)).equals(await readFile(image)), 'the filled disk is byte-identical to the image');
    const gets = after.gets - before.gets;
    const bytes = after.getBytes - before.getBytes;
    t.log(`cold fill of 32 MiB (24 MiB of data): ${gets} GETs, ${(bytes / MiB).toFixed(1)} MiB at the gateway`);
    t.true(bytes >= 24 * MiB, 'every data block came from the gateway');
    // 24 MiB of data in fill runs of 4 MiB of image (3 MiB of data, together in the pack): 8 range
    // GETs, plus the repository's marker, listings, manifest and pack index, read by the device and
    // by its fetch worker. One GET per 64 KiB block would be 384; per 512 KiB, 48 or more.
    t.true(gets <= 24, `${gets} GETs for 24 MiB of data: ranges of at least 1 MiB on average`);

    // Version 2 changes one block in every 4 MiB: its new blocks are in a pack of their own, the
    // rest in the first pack with the old blocks between them. A fill run of 4 MiB takes one range
    // of each pack (the old block read along), not three.
    const changed = Buffer.from(await readFile(image));
    for (let at = 2 * MiB; at < changed.length; at += 4 * MiB) randomBytes(BLOCK).copy(changed, at);
    const image2 = await writeDisk(join(dir, 'image2.raw'), changed);
    await importInto(repo, image2, 'ranges');
    const disk2 = join(dir, 'disk2.raw');
    const before2 = await cluster!.gatewayCounters();
    const fill2 = await lazyboot(['disk', 'fill', '--disk', disk2, '--image', 'ranges@2', '--from', repo, '--s3-endpoint', endpoint, '--no-cache']);
    const after2 = await cluster!.gatewayCounters();
    t.is(fill2.exitCode, 0, fill2.stderr);
    t.true((await readFile(disk2)).equals(changed), 'the filled disk of version 2 is byte-identical to it');
    const gets2 = after2.gets - before2.gets;
    const bytes2 = after2.getBytes - before2.getBytes;
    t.log(`cold fill of version 2 (8 blocks new, in their own pack): ${gets2} GETs, ${(bytes2 / MiB).toFixed(2)} MiB`);
    // The 8 old blocks came along inside the first pack's ranges (without them: 24 MiB and the small objects).
    t.true(bytes2 >= 24 * MiB + 8 * BLOCK, 'the old blocks between were read along');
    // 8 more ranges than the first fill (the new pack's blocks) and its second pack index (read by
    // the device and its fetch worker): 10; three ranges a run instead of two would be 18.
    t.true(gets2 <= gets + 12, `${gets2} GETs against ${gets} for version 1: the first pack's blocks around each changed block are one range`);

    // The write path takes --s3-endpoint too: the filled disk of version 2 snapshotted back into the
    // bucket as a new name (its blocks are all there: none sent), which exports byte-identical.
    const shot = await lazyboot(['snapshot', '--disk', disk2, '--to', repo, '--as', 'ranges-copy', '--s3-endpoint', endpoint, '--json']);
    t.is(shot.exitCode, 0, shot.stderr);
    t.like(JSON.parse(shot.stdout), { ref: 'ranges-copy@1', sentBlocks: 0 });
    const copy = join(dir, 'copy.raw');
    const exported = await lazyboot(['image', 'export', 'ranges-copy', copy, '--repo', repo, '--s3-endpoint', endpoint]);
    t.is(exported.exitCode, 0, exported.stderr);
    t.true((await readFile(copy)).equals(changed), 'the snapshot written through --s3-endpoint exports as the disk');
  }));

test.serial('the gateway stopped during a fill: one clear line naming the endpoint, present blocks still served, the fill resumes and completes when it is back', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const repo = prefix('outage');
    const image = await writeDisk(join(dir, 'image.raw'), randomBytes(48 * MiB));
    await importInto(repo, image, 'outage');
    const disk = join(dir, 'disk.raw');
    const socket = join(dir, 'disk.sock');
    // A slow fill (4 MiB/s: ~12 s), so that the gateway goes away in its middle.
    const server = await startServing(['disk', 'serve', 'outage', '--from', repo, '--s3-endpoint', endpoint, '--disk', disk, '--socket', socket, '--no-cache', '--fill', '--fill-rate', '4M']);
    const qemuIo = (command: string) => execa('qemu-io', ['-f', 'raw', '-c', command, server.uri], { reject: false });
    let stopped: number | undefined;
    try {
      // The first MiB is read (fetched) before the outage; the last one is left to the fill.
      const early = await qemuIo('read -q 0 1M');
      t.is(early.exitCode, 0, early.stderr);
      await cluster!.stopGateway();
      try {
        t.true(await server.waitForLog(/fill: blocks .* failed/, 60_000), `the fill reports the outage: ${server.stderr()}`);
        const present = await qemuIo('read -q 0 1M');
        t.is(present.exitCode, 0, 'blocks already present are served with the gateway gone');
        t.false(/error|fail/i.test(`${present.stdout}${present.stderr}`), present.stdout);
        const absent = await qemuIo(`read -q ${47 * MiB} 1M`);
        t.regex(`${absent.stdout}${absent.stderr}`, /Input\/output error/, 'an absent block cannot be read while the store is down');
      } finally {
        await cluster!.startGateway();
      }
      t.true(await server.waitForLog(/fill done: 768\/768 blocks present/, 180_000), `the fill completes once the gateway is back: ${server.stderr().slice(-2000)}`);
    } finally {
      stopped = await server.stop();
    }
    t.is(stopped, 0);
    const lines = server.stderr().split('\n');
    const failure = lines.find((line) => line.includes('fill: blocks') && line.includes('failed'))!;
    t.log(failure);
    // One line: which repository, the endpoint that cannot be reached, and what to do.
    t.true(failure.includes(repo) && failure.includes(`cannot reach the S3 endpoint ${endpoint}`) && /check .* the store is up/.test(failure), failure);
    t.true((await readFile(disk)).equals(await readFile(image)), 'the disk is byte-identical once the fill completed');
  }));

test.serial('tiny boots with `lazyboot boot --from s3:// --s3-endpoint`: the guest ran, its present blocks are the image\'s; a second boot reads them from the host cache, not the bucket', (t) =>
  inTempDir(async (dir) => {
    t.timeout(400_000);
    const tiny = await ensureFixture('tiny');
    const repo = prefix('tiny');
    await importInto(repo, tiny.path, 'tiny');
    const cache = join(dir, 'cache');
    // --pivot none: every block the guest read came through the copy-on-read device, from the
    // bucket or (the second boot) the host cache in front of it.
    const boot = async (disk: string) => {
      const before = await cluster!.gatewayCounters();
      const result = await lazyboot(['boot', 'tiny', '--from', repo, '--s3-endpoint', endpoint, '--disk', disk, '--cache', cache, '--pivot', 'none', '--memory', '256M', '--timeout', '180s'], { TMPDIR: dir });
      const after = await cluster!.gatewayCounters();
      t.log(result.stderr);
      t.is(result.exitCode, 0, result.stderr);
      t.regex(result.stderr, /storage-ready at [\d.]+ s: .*said by the image's lazyboot hook/);
      t.regex(result.stdout, /summary: tiny@1 stopped/);
      return { gets: after.gets - before.gets, bytes: after.getBytes - before.getBytes };
    };
    const disk = join(dir, 'tiny.raw');
    const first = await boot(disk);
    const status = JSON.parse((await lazyboot(['disk', 'status', '--disk', disk, '--json'])).stdout) as { presentBlocks: number; totalBlocks: number; modifiedBlocks: Record<string, number> };
    t.true(Object.values(status.modifiedBlocks)[0]! > 0, 'the guest wrote its boot counter: W bits set');
    const { present, mismatched } = await presentBlocksMatch(disk, tiny.path);
    t.is(present, status.presentBlocks);
    t.true(present > 0 && present < status.totalBlocks, `${present} of ${status.totalBlocks} blocks present: what the boot read`);
    t.deepEqual(mismatched, [], 'every present block the guest did not write holds the image\'s bytes');
    // A fresh disk on the same host: the blocks come from the host cache (the bucket gives only
    // the repository's small objects: marker, listings, pack index, the boot trace).
    const second = await boot(join(dir, 'tiny-2.raw'));
    t.log(`first boot: ${first.gets} GETs, ${(first.bytes / MiB).toFixed(1)} MiB; second boot, host cache: ${second.gets} GETs, ${(second.bytes / MiB).toFixed(2)} MiB`);
    t.true(first.bytes > 10 * MiB, 'the first boot read its blocks from the bucket');
    t.true(second.bytes < 1 * MiB, 'the second boot read its blocks from the host cache');
  }));

test.serial('Debian runs a command with `lazyboot run --from s3://` (to agent-ready, one boot)', (t) =>
  inTempDir(async (dir) => {
    t.timeout(20 * 60_000);
    const debian = await ensureFixture('debian');
    const repo = prefix('debian');
    await importInto(repo, debian.path, 'debian');
    const started = Date.now();
    const run = await lazyboot(['run', 'debian', '--from', repo, '--s3-endpoint', endpoint, '--disk', join(dir, 'debian.raw'),
      '--memory', '512M', '--boot-timeout', '600s', '--no-cache', '--', 'cat', '/etc/os-release'], { TMPDIR: dir });
    t.log(`boot + cat from s3://: ${Date.now() - started} ms\n${run.stderr}`);
    t.is(run.exitCode, 0, run.stderr);
    t.regex(run.stdout, /^ID=debian$/m);
    t.regex(run.stdout, /VERSION_ID="12"/);
  }));
