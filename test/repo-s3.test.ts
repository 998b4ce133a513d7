// The image repository on an S3 bucket, against a real Ceph RGW (test/helpers/ceph.ts): the CLI
// imports, lists, exports and serves from `s3://BUCKET/PREFIX` byte for byte; two importers in
// two processes get distinct, whole versions (create-only manifests); store failures are one line.
import test from 'ava';
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { S3Client, ListObjectsV2Command, HeadObjectCommand } from '@aws-sdk/client-s3';
import { startCephCluster, type CephCluster } from './helpers/ceph.js';
import { lazyboot, inTempDir, oneLine } from './helpers/repo-cli.js';
import { startServing } from './helpers/served-process.js';
import { writeDisk, MiB } from './helpers/repo-fixtures.js';
import { qemuIo } from './cor-fixtures.js';
import { openCorDevice } from '../lib/cor/device.js';
import { TraceStore } from '../lib/trace/trace-store.js';
import { ensureFixture } from '../fixtures/build.js';
import { Repository } from '../lib/repo/repository.js';
import { VersionConflict } from '../lib/repo/errors.js';

const BUCKET = 'lazyboot-tests';
let cluster: CephCluster | undefined;

test.before(async () => {
  // No skip: a cluster that cannot start fails every test here with the reason.
  cluster = await startCephCluster();
  await cluster.createBucket(BUCKET);
  Object.assign(process.env, cluster.env()); // the CLI processes inherit the endpoint and keys
});

test.after.always(async () => {
  await cluster?.stop();
});

const prefix = (name: string): string => `s3://${BUCKET}/${name}-${randomBytes(3).toString('hex')}`;

/** A disk with data, zeros and a repeated block, `size` bytes, different for each `seed`. */
function disk(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let at = 0; at < size; at += 256 * 1024) {
    if ((at / (256 * 1024)) % 3 === 2) continue; // zero runs
    randomBytes(Math.min(128 * 1024, size - at)).copy(bytes, at);
  }
  bytes.writeUInt32BE(seed, 0);
  return bytes;
}

test('an image imported into s3:// lists, exports and serves byte-identical to qemu-img convert and nbdcopy', (t) =>
  inTempDir(async (dir) => {
    t.timeout(600_000);
    const repo = prefix('serve');
    const tiny = await ensureFixture('tiny');
    const imported = await lazyboot(['image', 'import', tiny.path, 'tiny', '--repo', repo]);
    t.is(imported.exitCode, 0, imported.stderr);
    t.regex(imported.stdout, /^tiny@1: 40 MiB in 640 blocks of 64 KiB; [0-9]+ new/m);
    const ls = await lazyboot(['image', 'ls', '--repo', repo]);
    t.is(ls.exitCode, 0, ls.stderr);
    t.regex(ls.stdout, /^tiny@1\s+40 MiB\s+64 KiB/m);
    const info = await lazyboot(['image', 'info', 'tiny', '--verify', '--repo', repo]);
    t.is(info.exitCode, 0, info.stderr);
    t.regex(info.stdout, /check:\s+all blocks present and verified/);
    const original = await readFile(tiny.path);
    const exported = join(dir, 'exported.raw');
    const exportRun = await lazyboot(['image', 'export', 'tiny@1', exported, '--repo', repo]);
    t.is(exportRun.exitCode, 0, exportRun.stderr);
    t.true((await readFile(exported)).equals(original), 'image export is byte-identical');

    const socket = join(dir, 'repo.sock');
    const server = await startServing(['repo', 'serve', '--repo', repo, '--socket', socket]);
    try {
      t.regex(server.uri, /^nbd\+unix:/);
      const converted = join(dir, 'converted.raw');
      await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///tiny?socket=${socket}`, converted]);
      t.true((await readFile(converted)).equals(original), 'qemu-img convert over repo serve is byte-identical');
      const copied = join(dir, 'copied.raw');
      await execa('nbdcopy', [`nbd+unix:///tiny@1?socket=${socket}`, copied]);
      t.true((await readFile(copied)).equals(original), 'nbdcopy over repo serve is byte-identical');
    } finally {
      t.is(await server.stop(), 0);
    }

    // The directory layout, under the prefix; the 40 MiB pack went up as a multipart upload.
    const client = new S3Client({ endpoint: cluster!.endpoint, region: cluster!.region, forcePathStyle: true, credentials: { accessKeyId: cluster!.accessKeyId, secretAccessKey: cluster!.secretAccessKey } });
    try {
      const keyPrefix = repo.slice(`s3://${BUCKET}/`.length) + '/';
      const listed = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: keyPrefix }));
      const keys = (listed.Contents ?? []).map((item) => item.Key!.slice(keyPrefix.length)).sort();
      t.is(keys.length, 4, keys.join(' '));
      t.is(keys[0], 'lazyboot-repository');
      t.is(keys[1], 'manifests/tiny/1.manifest');
      t.regex(keys[2]!, /^packs\/pack-[0-9a-f]+-[0-9]+-[0-9a-f]+\.idx$/);
      t.regex(keys[3]!, /^packs\/pack-[0-9a-f]+-[0-9]+-[0-9a-f]+\.pack$/);
      const pack = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: keyPrefix + keys[3]! }));
      t.regex(pack.ETag ?? '', /-[0-9]+"?$/, 'a multipart ETag (MD5-of-parts, dash, part count)');
    } finally {
      client.destroy();
    }
  }));

test('two importers of one name in two processes get two distinct versions, both whole', (t) =>
  inTempDir(async (dir) => {
    t.timeout(600_000);
    const repo = prefix('race');
    // The repository exists first, so that the race is on the version and not on the marker.
    const seedFile = await writeDisk(join(dir, 'seed.raw'), disk(1 * MiB, 0));
    t.is((await lazyboot(['image', 'import', seedFile, 'other', '--repo', repo])).exitCode, 0);
    const files = [await writeDisk(join(dir, 'a.raw'), disk(3 * MiB, 1)), await writeDisk(join(dir, 'b.raw'), disk(3 * MiB, 2))];
    const runs = await Promise.all(files.map((file) => lazyboot(['image', 'import', file, 'racy', '--repo', repo])));
    for (const run of runs) t.is(run.exitCode, 0, run.stderr);
    const refs = runs.map((run) => /^(racy@[0-9]+):/m.exec(run.stdout)?.[1]).sort();
    t.deepEqual(refs, ['racy@1', 'racy@2']);
    const ls = await lazyboot(['image', 'ls', '--repo', repo]);
    t.deepEqual(ls.stdout.split('\n').slice(1).filter(Boolean).map((line) => line.split(/\s+/)[0]), ['other@1', 'racy@1', 'racy@2']);
    // Each version is exactly the file its importer read.
    for (const [index, run] of runs.entries()) {
      const ref = /^(racy@[0-9]+):/m.exec(run.stdout)![1]!;
      const out = join(dir, `${ref}.raw`);
      const exported = await lazyboot(['image', 'export', ref, out, '--repo', repo]);
      t.is(exported.exitCode, 0, exported.stderr);
      t.true((await readFile(out)).equals(await readFile(files[index]!)), `${ref} is whole`);
    }
  }));

test('wrong credentials, a missing bucket, an unreachable endpoint and a bad URI each fail in one line', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const file = await writeDisk(join(dir, 'd.raw'), disk(256 * 1024, 3));
    const repo = prefix('errors');
    const badKey = await lazyboot(['image', 'ls', '--repo', repo], { AWS_ACCESS_KEY_ID: 'NOSUCHKEY0000000', AWS_SECRET_ACCESS_KEY: 'wrong' });
    t.is(badKey.exitCode, 1);
    t.true(oneLine(badKey.stderr), badKey.stderr);
    t.regex(badKey.stderr, /refused the credentials \(InvalidAccessKeyId\)/);
    const badSecret = await lazyboot(['image', 'import', file, 'x', '--repo', repo], { AWS_SECRET_ACCESS_KEY: 'wrong' });
    t.is(badSecret.exitCode, 1);
    t.true(oneLine(badSecret.stderr), badSecret.stderr);
    t.regex(badSecret.stderr, /refused the credentials \(SignatureDoesNotMatch\)/);
    const noBucket = await lazyboot(['image', 'import', file, 'x', '--repo', 's3://no-such-bucket/p']);
    t.is(noBucket.exitCode, 1);
    t.true(oneLine(noBucket.stderr), noBucket.stderr);
    t.regex(noBucket.stderr, /bucket no-such-bucket does not exist at http:\/\/127\.0\.0\.1:[0-9]+/);
    const unreachable = await lazyboot(['image', 'ls', '--repo', repo, '--s3-endpoint', 'http://127.0.0.1:9']);
    t.is(unreachable.exitCode, 1);
    t.true(oneLine(unreachable.stderr), unreachable.stderr);
    t.regex(unreachable.stderr, /cannot reach the S3 endpoint http:\/\/127\.0\.0\.1:9 \(ECONNREFUSED, \d+ attempts\): check --s3-endpoint/);
    const badUri = await lazyboot(['image', 'ls', '--repo', 's3://UPPER/x']);
    t.not(badUri.exitCode, 0);
    t.true(oneLine(badUri.stderr), badUri.stderr);
    t.regex(badUri.stderr, /invalid repository URI "s3:\/\/UPPER\/x"/);
    const empty = await lazyboot(['image', 'ls', '--repo', repo]);
    t.is(empty.exitCode, 1);
    t.true(oneLine(empty.stderr), empty.stderr);
    t.regex(empty.stderr, /s3:\/\/lazyboot-tests\/errors-[0-9a-f]+ is not a lazyboot repository \(it holds nothing\)/);
    t.is((await lazyboot(['image', 'import', file, 'x', '--repo', repo])).exitCode, 0, 'nothing was damaged by the failures');
  }));

test('eight writers creating the same NAME@N at once: exactly one wins, the others get VersionConflict', async (t) => {
  t.timeout(300_000);
  const uri = prefix('claim');
  const first = await Repository.open(uri, { create: true });
  // Eight repositories, each with its own S3 client: as good as eight hosts for the store.
  const writers = [first, ...(await Promise.all(Array.from({ length: 7 }, () => Repository.open(uri, { create: false }))))];
  try {
    const outcomes = await Promise.allSettled(writers.map((repo, index) =>
      repo.commitImage({ name: 'claimed', size: 0, blockSize: 65536, digests: Buffer.alloc(0), version: 1, session: `writer-${index}` })));
    const won = outcomes.filter((outcome) => outcome.status === 'fulfilled');
    t.is(won.length, 1);
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') t.true(outcome.reason instanceof VersionConflict, String(outcome.reason));
    }
    const winner = (won[0] as PromiseFulfilledResult<{ session?: string }>).value.session;
    t.is((await writers[0]!.resolve('claimed@1')).session, winner, 'the stored manifest is the winner\'s, whole');
    t.deepEqual(await writers[0]!.versions('claimed'), [1]);
  } finally {
    await Promise.all(writers.map((repo) => repo.close()));
  }
});

test('a copy-on-read disk served --from s3:// reads byte-identical, each data block fetched once from the bucket', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const repo = prefix('cor');
    const file = await writeDisk(join(dir, 'image.raw'), disk(6 * MiB, 4));
    t.is((await lazyboot(['image', 'import', file, 'lazy', '--repo', repo])).exitCode, 0);
    const socket = join(dir, 'disk.sock');
    const server = await startServing(['disk', 'serve', 'lazy', '--from', repo, '--disk', join(dir, 'disk.raw'), '--socket', socket, '--no-cache']);
    let stopped: number | undefined;
    try {
      const copy = join(dir, 'copy.raw');
      await execa('nbdcopy', [server.uri, copy]);
      t.true((await readFile(copy)).equals(await readFile(file)), 'nbdcopy through the COR disk is byte-identical');
    } finally {
      stopped = await server.stop();
    }
    t.is(stopped, 0);
    // 96 blocks of 64 KiB, 32 of them data: each fetched once, straight from the bucket.
    t.regex(server.stderr(), / 32 blocks fetched in [0-9]+ requests, 0 failed/);
    // And what speculation cost, and what the reads waited: the figures bench-cor compares by.
    t.regex(server.stderr(), /; fetched ahead [\d.]+ [KMG]?i?B, of it read [\d.]+ [KMG]?i?B; reads waited on fetches \d+\.\d\d s$/m);
  }));

test('snapshot --to s3:// ships only the written blocks the bucket lacks; the new version exports as the written disk, the parent unchanged', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const repo = prefix('snap');
    const original = disk(4 * MiB, 5);
    const file = await writeDisk(join(dir, 'image.raw'), original);
    t.is((await lazyboot(['image', 'import', file, 'snap', '--repo', repo])).exitCode, 0);
    const local = join(dir, 'disk.raw');
    const socket = join(dir, 'disk.sock');
    // Two blocks get new content (one of them twice: sent once), one gets a partial write.
    const server = await startServing(['disk', 'serve', 'snap', '--from', repo, '--disk', local, '--socket', socket, '--no-cache']);
    try {
      await qemuIo(server.uri, ['write -P 0xaa 0 65536', 'write -P 0xaa 1048576 65536', 'write -P 0xbb 2097252 512']);
    } finally {
      t.is(await server.stop(), 0);
    }
    const expected = Buffer.from(original);
    expected.fill(0xaa, 0, 65536);
    expected.fill(0xaa, 1048576, 1048576 + 65536);
    expected.fill(0xbb, 2097252, 2097252 + 512);

    const shot = await lazyboot(['snapshot', '--disk', local, '--to', repo, '--as', 'snap', '--json']);
    t.is(shot.exitCode, 0, shot.stderr);
    const summary = JSON.parse(shot.stdout);
    t.like(summary, { ref: 'snap@2', parent: 'snap@1', dirtyBlocks: 3, sentBlocks: 2, dedupedBlocks: 1, blockBytesSent: 2 * 65536 });
    for (const [ref, content] of [['snap@2', expected], ['snap@1', original]] as const) {
      const out = join(dir, `${ref}.raw`);
      const exported = await lazyboot(['image', 'export', ref, out, '--repo', repo]);
      t.is(exported.exitCode, 0, exported.stderr);
      t.true((await readFile(out)).equals(content), `${ref} exports as expected`);
    }
    // The marks are cleared: the next snapshot ships nothing.
    const again = JSON.parse((await lazyboot(['snapshot', '--disk', local, '--to', repo, '--as', 'snap', '--json'])).stdout);
    t.like(again, { ref: 'snap@3', dirtyBlocks: 0, sentBlocks: 0 });
  }));

test('a boot trace recorded from s3:// is stored in the bucket beside its image version and replayed from there by another host', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const repo = prefix('trace');
    const file = await writeDisk(join(dir, 'image.raw'), disk(4 * MiB, 6));
    t.is((await lazyboot(['image', 'import', file, 'boot', '--repo', repo])).exitCode, 0);
    // Data blocks in a jumbled order: 4-5, 0, 12-13, 16 (disk() leaves the last 128 KiB of each 256 KiB and every third 256 KiB zero).
    const reads = ['read 262144 131072', 'read 0 65536', 'read 786432 131072', 'read 1048576 65536'];
    const bootOnce = async (hostCache: string, record: boolean) => {
      const lines: string[] = [];
      const device = await openCorDevice({ image: 'boot', disk: join(dir, `disk-${hostCache}.raw`), from: [repo], fetchAheadBytes: 0, log: (line) => lines.push(line), trace: { dir: join(dir, hostCache), record } });
      try {
        const stats = await device.settledStats();
        await qemuIo(device.uri, reads);
        await device.trace!.finish();
        return { lines, traceBlocks: stats.traceBlocks };
      } finally {
        await device.close();
      }
    };
    const first = await bootOnce('host-1', true);
    t.is(first.traceBlocks, 0);
    t.true(first.lines.some((line) => /boot trace: recorded 6 blocks/.test(line) && line.includes(`the repository ${repo}`)), first.lines.join('\n'));
    t.deepEqual(await new TraceStore(join(dir, 'host-1')).list(), [], 'nothing in the host cache: the bucket has it');
    const listed = await lazyboot(['image', 'trace', 'ls', '--repo', repo]);
    t.is(listed.exitCode, 0, listed.stderr);
    t.regex(listed.stdout, /boot@1/);
    // Another host (its own host cache, recording off) replays the trace from the bucket.
    const second = await bootOnce('host-2', false);
    t.is(second.traceBlocks, 6, second.lines.join('\n'));
    t.true(second.lines.some((line) => line.includes(`from the repository ${repo}`)), second.lines.join('\n'));
    // And `image trace rm` removes it from the bucket.
    const removed = await lazyboot(['image', 'trace', 'rm', 'boot@1', '--repo', repo]);
    t.is(removed.exitCode, 0, removed.stderr);
    const after = await lazyboot(['image', 'trace', 'ls', '--repo', repo]);
    t.is(after.exitCode, 0, after.stderr);
    t.notRegex(after.stdout, /boot@1/);
  }));
