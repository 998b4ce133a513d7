// `repo check` and `repo check --repair` of an s3:// repository against a real Ceph RGW (one
// cluster for the file): damaged and missing objects are one line each; what interrupted imports
// leave (a pack without an index, a pack and index no manifest uses, an unfinished multipart
// upload) is kept while young and removed by --repair once old enough (--min-age 0 here); an old
// unreferenced pack a running import reuses is kept (the import rewrote its index); and an
// import SIGKILLed at spread-out moments never leaves a partial version, nor one SIGINTed as a
// terminal's Ctrl-C does (that one cleans up its upload and says so in one line).
import test, { type ExecutionContext } from 'ava';
import { execa } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  S3Client, ListObjectsV2Command, ListMultipartUploadsCommand, PutObjectCommand, GetObjectCommand, DeleteObjectCommand,
  CreateMultipartUploadCommand, UploadPartCommand,
} from '@aws-sdk/client-s3';
import { startCephCluster, type CephCluster } from './helpers/ceph.js';
import { BIN, lazyboot, inTempDir, oneLine } from './helpers/repo-cli.js';
import { MiB } from './helpers/repo-fixtures.js';
import { encodePackIndex } from '../lib/repo/pack-index.js';
import { Repository } from '../lib/repo/repository.js';

const BUCKET = 'lazyboot-check';
let cluster: CephCluster | undefined;
let client: S3Client | undefined;

test.before(async () => {
  cluster = await startCephCluster();
  await cluster.createBucket(BUCKET);
  Object.assign(process.env, cluster.env()); // the CLI processes inherit the endpoint and keys
  client = new S3Client({ endpoint: cluster.endpoint, region: cluster.region, forcePathStyle: true, credentials: { accessKeyId: cluster.accessKeyId, secretAccessKey: cluster.secretAccessKey } });
});

test.after.always(async () => {
  client?.destroy();
  await cluster?.stop();
});

const newPrefix = (name: string): string => `${name}-${randomBytes(3).toString('hex')}`;
const uri = (prefix: string): string => `s3://${BUCKET}/${prefix}`;

async function keysUnder(prefix: string): Promise<string[]> {
  const listed = await client!.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}/` }));
  return (listed.Contents ?? []).map((item) => item.Key!.slice(prefix.length + 1)).sort();
}

async function uploadsUnder(prefix: string): Promise<number> {
  const listed = await client!.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: `${prefix}/` }));
  return (listed.Uploads ?? []).length;
}

const put = (key: string, body: Buffer) => client!.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));

async function get(key: string): Promise<Buffer> {
  const reply = await client!.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await reply.Body!.transformToByteArray());
}

async function imported(t: ExecutionContext, file: string, name: string, repo: string): Promise<void> {
  const result = await lazyboot(['image', 'import', file, name, '--repo', repo]);
  t.is(result.exitCode, 0, result.stderr);
}

/** The check's lines about objects (not its summary). */
const findingLines = (stdout: string): string[] => stdout.trim().split('\n').filter((line) => !/: [0-9]+ image\(s\), [0-9]+ pack\(s\);/.test(line));

test('repo check on s3:// names each damaged or stray object in one line; --repair removes only old unreferenced leftovers', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const prefix = newPrefix('damage');
    const repo = uri(prefix);
    const alpha = join(dir, 'alpha.raw');
    const beta = join(dir, 'beta.raw');
    await writeFile(alpha, randomBytes(2 * MiB));
    await writeFile(beta, randomBytes(2 * MiB));
    await imported(t, alpha, 'alpha', repo);
    await imported(t, beta, 'beta', repo);
    const clean = await lazyboot(['repo', 'check', '--repo', repo]);
    t.is(clean.exitCode, 0, clean.stdout + clean.stderr);
    t.is(clean.stdout, `${repo}: 2 image(s), 2 pack(s); 0 problem(s)`);
    const [alphaIndex, betaIndex] = (await keysUnder(prefix)).filter((key) => key.endsWith('.idx'));

    // What interrupted imports leave, made by hand: a pack without its index, a pack and index no
    // manifest refers to, and a multipart upload never completed.
    const orphan = `packs/pack-0000000000aa-4242-0badf00d.pack`;
    await put(`${prefix}/${orphan}`, randomBytes(4096));
    const block = randomBytes(65536);
    const unreferenced = 'packs/pack-0000000000bb-4242-0badf00d';
    await put(`${prefix}/${unreferenced}.pack`, block);
    await put(`${prefix}/${unreferenced}.idx`, encodePackIndex([{ digest: createHash('sha256').update(block).digest(), offset: 0, length: block.length }]));
    const upload = await client!.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: `${prefix}/packs/pack-0000000000cc-4242-0badf00d.pack` }));
    await client!.send(new UploadPartCommand({ Bucket: BUCKET, Key: `${prefix}/packs/pack-0000000000cc-4242-0badf00d.pack`, UploadId: upload.UploadId!, PartNumber: 1, Body: randomBytes(5 * MiB) }));

    // Young (an import may still be writing them): listed, kept, and the check passes.
    const young = await lazyboot(['repo', 'check', '--repair', '--repo', repo]);
    t.is(young.exitCode, 0, young.stdout + young.stderr);
    const youngLines = findingLines(young.stdout);
    t.is(youngLines.length, 3, young.stdout);
    t.true(youngLines.every((line) => /; kept: an import may still be writing it \(--repair removes it once it is 60 min old, see --min-age\)$/.test(line)), young.stdout);
    t.regex(young.stdout, new RegExp(`^${repo}/${orphan}: pack without an index, written [0-9]+ s ago`, 'm'));
    t.regex(young.stdout, new RegExp(`^${repo}/${unreferenced}\\.idx: pack and index no manifest refers to \\(and ${repo}/${unreferenced}\\.pack\\)`, 'm'));
    t.regex(young.stdout, /: unfinished multipart upload begun [0-9T:.-]+Z, written/);
    t.regex(young.stdout, /0 problem\(s\); 3 recent unreferenced object\(s\) kept$/);
    t.is(await uploadsUnder(prefix), 1);

    // Old enough (--min-age 0: no import is running): removed, and only they.
    const repaired = await lazyboot(['repo', 'check', '--repair', '--min-age', '0', '--repo', repo]);
    t.is(repaired.exitCode, 0, repaired.stdout + repaired.stderr);
    t.is(findingLines(repaired.stdout).filter((line) => line.endsWith('left by an interrupted import; nothing refers to it (repaired)')).length, 3, repaired.stdout);
    t.regex(repaired.stdout, /3 problem\(s\), 3 repaired$/);
    t.deepEqual((await keysUnder(prefix)).filter((key) => key.startsWith('packs/')).length, 4, 'both images\' packs and indexes stay');
    t.is(await uploadsUnder(prefix), 0);
    t.is((await lazyboot(['repo', 'check', '--repo', repo])).stdout, `${repo}: 2 image(s), 2 pack(s); 0 problem(s)`);

    // Damage, one line each: a stray object, a manifest that does not decode, a lost pack
    // (its index and the manifest that needs it say so), and with --verify a flipped byte.
    await put(`${prefix}/notes.txt`, Buffer.from('hello'));
    await put(`${prefix}/manifests/gamma/1.manifest`, Buffer.from('not a manifest'));
    const betaPack = betaIndex!.replace(/\.idx$/, '.pack');
    const betaPackBytes = await get(`${prefix}/${betaPack}`);
    await client!.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: `${prefix}/${betaPack}` }));
    const alphaPack = alphaIndex!.replace(/\.idx$/, '.pack');
    const alphaBytes = await get(`${prefix}/${alphaPack}`);
    alphaBytes[100] ^= 0xff;
    await put(`${prefix}/${alphaPack}`, alphaBytes);
    const damaged = await lazyboot(['repo', 'check', '--repo', repo]);
    t.is(damaged.exitCode, 1);
    t.true(oneLine(damaged.stderr), damaged.stderr);
    t.regex(damaged.stderr, /has 4 problem\(s\) left/);
    const lines = findingLines(damaged.stdout);
    t.is(lines.length, 4, damaged.stdout);
    t.true(lines.includes(`${repo}/notes.txt: does not belong in a repository; move it out of the repository`), damaged.stdout);
    t.regex(damaged.stdout, new RegExp(`^${repo}/manifests/gamma/1\\.manifest: does not decode`, 'm'));
    t.regex(damaged.stdout, new RegExp(`^${repo}/${betaIndex}: lists [0-9]+ blocks of ${betaPack.slice(6)}, which is missing$`, 'm'));
    t.regex(damaged.stdout, new RegExp(`^${repo}/manifests/beta/1\\.manifest: refers to 32 block\\(s\\) that are missing or damaged`, 'm'));
    const verified = await lazyboot(['repo', 'check', '--verify', '--repo', repo]);
    t.is(verified.exitCode, 1);
    t.regex(verified.stdout, new RegExp(`^${repo}/${alphaIndex}: lists 1 block\\(s\\) of ${alphaPack.slice(6)} that fail their SHA-256 \\(first at offset 0\\)`, 'm'));
    t.regex(verified.stdout, /^.*manifests\/alpha\/1\.manifest: refers to 1 block\(s\) that are missing or damaged/m);

    // With manifests damaged, an unreferenced pack may be what they need: --repair keeps it.
    await put(`${prefix}/${orphan}`, randomBytes(4096));
    const cautious = await lazyboot(['repo', 'check', '--repair', '--min-age', '0', '--repo', repo]);
    t.is(cautious.exitCode, 1);
    t.regex(cautious.stdout, new RegExp(`^${repo}/${orphan}: pack without an index; kept, because 2 manifest\\(s\\) are damaged or miss blocks`, 'm'));
    t.true((await keysUnder(prefix)).includes(orphan));

    // Restored, the repository checks clean again; a bad --min-age is one line.
    await put(`${prefix}/${betaPack}`, betaPackBytes);
    alphaBytes[100] ^= 0xff;
    await put(`${prefix}/${alphaPack}`, alphaBytes);
    for (const key of ['notes.txt', 'manifests/gamma/1.manifest']) await client!.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: `${prefix}/${key}` }));
    const restored = await lazyboot(['repo', 'check', '--verify', '--repair', '--min-age', '0', '--repo', repo]);
    t.is(restored.exitCode, 0, restored.stdout);
    t.regex(restored.stdout, /2 image\(s\), 2 pack\(s\); 1 problem\(s\), 1 repaired$/);
    const badAge = await lazyboot(['repo', 'check', '--min-age', '-5', '--repo', repo]);
    t.is(badAge.exitCode, 1);
    t.true(oneLine(badAge.stderr), badAge.stderr);
    t.regex(badAge.stderr, /invalid --min-age -5/);
  }));

test('--repair keeps an unreferenced pack a running import reuses (its index rewritten young); a pack removed under an import is stored anew', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const prefix = newPrefix('reuse');
    const repo = uri(prefix);
    const file = join(dir, 'alpha.raw');
    const content = randomBytes(2 * MiB);
    await writeFile(file, content);
    await imported(t, file, 'alpha', repo);
    const dropManifest = () => client!.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: `${prefix}/manifests/alpha/1.manifest` }));
    await dropManifest(); // alpha's pack and index: referenced by nothing now
    // --min-age 0.2: 12 s, to outlast the CLI's start-up on a loaded machine.
    const indexWritten = async () => (await client!.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}/packs/` }))).Contents!.find((item) => item.Key!.endsWith('.idx'))!.LastModified!.getTime();
    const written = await indexWritten();
    await sleep(13_000);
    const old = await lazyboot(['repo', 'check', '--min-age', '0.2', '--repo', repo]);
    t.regex(old.stdout, /pack and index no manifest refers to .*, left by an interrupted import; nothing refers to it \(--repair fixes this\)/);

    /** An in-process import of `content` as NAME that waits for `gate` after its last block, before its manifest. */
    const pausedImport = async (repository: Repository, gate: Promise<void>) => {
      async function* source() {
        yield content;
        await gate;
      }
      return repository.importImage('alpha', source(), { size: content.length });
    };
    const first = await Repository.open(repo, { create: false });
    try {
      let open!: () => void;
      const importing = pausedImport(first, new Promise<void>((resolve) => (open = resolve)));
      const deadline = Date.now() + 60_000;
      while ((await indexWritten()) === written && Date.now() < deadline) await sleep(50);
      t.not(await indexWritten(), written, 'the import rewrote the index of the pack it reuses');
      const repair = await lazyboot(['repo', 'check', '--repair', '--min-age', '0.2', '--repo', repo]);
      t.is(repair.exitCode, 0, repair.stdout);
      t.regex(repair.stdout, /pack and index no manifest refers to .*written [0-9]+ s ago; kept: an import may still be writing it/);
      open();
      const result = await importing;
      t.is(result.ref, 'alpha@1');
      t.is(result.newBlocks, 0, 'the import reused the pack');
    } finally {
      await first.close();
    }
    const out = join(dir, 'alpha.export');
    t.is((await lazyboot(['image', 'export', 'alpha', out, '--repo', repo])).exitCode, 0);
    t.true((await readFile(out)).equals(content));

    // The same, but the repair runs (at any age) before the import reaches the pack: the import
    // finds its index gone and stores the blocks itself.
    const second = await Repository.open(repo, { create: false });
    try {
      await dropManifest();
      const removed = await lazyboot(['repo', 'check', '--repair', '--min-age', '0', '--repo', repo]);
      t.regex(removed.stdout, /1 problem\(s\), 1 repaired$/);
      t.is((await keysUnder(prefix)).filter((key) => key.startsWith('packs/')).length, 0);
      const result = await pausedImport(second, Promise.resolve());
      t.is(result.newBlocks, 32, 'the blocks of the removed pack were stored anew');
    } finally {
      await second.close();
    }
    t.is((await lazyboot(['image', 'export', 'alpha', out, '--repo', repo])).exitCode, 0);
    t.true((await readFile(out)).equals(content));
    t.is((await lazyboot(['repo', 'check', '--verify', '--repo', repo])).exitCode, 0);
  }));

/** When the import writing into `prefix` began its multipart upload (or ended, if it did not). */
async function uploadBegun(prefix: string, child: { exitCode: number | null }): Promise<number> {
  while (child.exitCode === null && (await uploadsUnder(prefix)) === 0) await sleep(10);
  return Date.now();
}

/** Kinds of object an interrupted import may leave, as `repo check` names them. */
const LEFTOVER = /: (pack without an index|pack and index no manifest refers to|unfinished multipart upload begun)/;

test('an import SIGKILLed at spread-out moments leaves no partial version; check, --repair and a re-import then succeed', (t) =>
  inTempDir(async (dir) => {
    t.timeout(600_000);
    // 32 MiB of random blocks: a pack of four 8 MiB parts (s3-storage.ts PART_BYTES), a multipart upload.
    const file = join(dir, 'disk.raw');
    const content = randomBytes(32 * MiB);
    await writeFile(file, content);
    // An uncut run, timed from the moment its pack upload begins (after Node's start and the
    // repository's creation, whose length varies with the machine's load) to its end. Each killed
    // run waits for its own upload to begin, then is killed at a random moment in one quarter of
    // that stretch; one more is killed before its upload begins (Node's start, the repository made).
    const uncut = newPrefix('uncut');
    const spawned = Date.now();
    const first = execa('node', [BIN, 'image', 'import', file, 'disk', '--repo', uri(uncut)], { reject: false });
    const uncutStart = await uploadBegun(uncut, first);
    const startup = uncutStart - spawned;
    t.is((await first).exitCode, 0);
    const writing = Date.now() - uncutStart;
    t.log(`an uncut import begins its upload after ${startup} ms and writes its pack and manifest in ${writing} ms more`);
    const outcomes: string[] = [];
    for (let quarter = -1; quarter < 4; quarter++) {
      const prefix = newPrefix('killed');
      const repo = uri(prefix);
      const child = execa('node', [BIN, 'image', 'import', file, 'disk', '--repo', repo], { reject: false });
      const delay = quarter < 0 ? Math.round(Math.random() * startup) : Math.round(((quarter + Math.random()) / 4) * writing);
      try {
        if (quarter >= 0) await uploadBegun(prefix, child);
        await sleep(delay);
      } finally {
        child.kill('SIGKILL');
      }
      const ended = await child;
      const keys = await keysUnder(prefix);
      const uploads = await uploadsUnder(prefix);
      // No visible partial version: either none, or the whole one, exporting byte-identical.
      const ls = await lazyboot(['image', 'ls', '--repo', repo]);
      const versionThere = keys.includes('manifests/disk/1.manifest');
      if (!keys.includes('lazyboot-repository')) {
        t.is(ls.exitCode, 1, 'killed before the repository was made: there is none');
      } else {
        t.is(ls.exitCode, 0, ls.stderr);
        t.is(ls.stderr, '');
        t.is(/^disk@1 /m.test(ls.stdout), versionThere, ls.stdout);
      }
      if (versionThere) {
        const out = join(dir, `export-${quarter}.raw`);
        const exported = await lazyboot(['image', 'export', 'disk@1', out, '--repo', repo]);
        t.is(exported.exitCode, 0, exported.stderr);
        t.true((await readFile(out)).equals(content), 'the version that is there is whole');
      }
      outcomes.push(`${quarter < 0 ? `${delay} ms after its start` : `${delay} ms into its upload`}: ${ended.signal ?? `exit ${ended.exitCode}`}, ${keys.length} objects, ${uploads} unfinished upload(s), version ${versionThere ? 'whole' : 'none'}`);
      if (!keys.includes('lazyboot-repository')) continue;
      // The check passes, noting only unreferenced leftovers; --repair (at any age) removes them.
      const check = await lazyboot(['repo', 'check', '--repo', repo]);
      t.is(check.exitCode, 0, check.stdout + check.stderr);
      t.true(findingLines(check.stdout).every((line) => LEFTOVER.test(line)), check.stdout);
      const repair = await lazyboot(['repo', 'check', '--repair', '--min-age', '0', '--repo', repo]);
      t.is(repair.exitCode, 0, repair.stdout + repair.stderr);
      t.is(await uploadsUnder(prefix), 0);
      t.true(findingLines(repair.stdout).every((line) => line.endsWith('(repaired)')), repair.stdout);
      t.is((await keysUnder(prefix)).filter((key) => key.startsWith('packs/')).length, versionThere ? 2 : 0, 'only the committed version\'s pack and index stay');
      // A re-import then succeeds, as the next version.
      const again = await lazyboot(['image', 'import', file, 'disk', '--repo', repo]);
      t.is(again.exitCode, 0, again.stderr);
      t.regex(again.stdout, new RegExp(`^disk@${versionThere ? 2 : 1}: 32 MiB in 512 blocks of 64 KiB; ${versionThere ? 0 : 512} new`));
    }
    t.log(outcomes.join('\n'));
  }));

test('Ctrl-C (SIGINT to the process group) stops an import: its upload is aborted, no version, one line, non-zero exit', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const file = join(dir, 'disk.raw');
    await writeFile(file, randomBytes(48 * MiB));
    const prefix = newPrefix('sigint');
    const repo = uri(prefix);
    // Its own process group, as a terminal's foreground job; signalled once its pack upload is under way.
    const child = execa('node', [BIN, 'image', 'import', file, 'disk', '--repo', repo], { reject: false, detached: true });
    try {
      const deadline = Date.now() + 60_000;
      while ((await uploadsUnder(prefix)) === 0 && child.exitCode === null && Date.now() < deadline) await sleep(20);
      t.is(await uploadsUnder(prefix), 1, 'the import was uploading its pack when interrupted');
      process.kill(-child.pid!, 'SIGINT');
    } finally {
      setTimeout(() => child.kill('SIGKILL'), 30_000).unref(); // only if the interrupt did not end it
    }
    const ended = await child;
    t.is(ended.exitCode, 1);
    t.true(oneLine(ended.stderr), ended.stderr);
    t.regex(ended.stderr, /^lazyboot: import of disk interrupted by SIGINT; no version was committed: run it again/);
    t.is(await uploadsUnder(prefix), 0, 'the unfinished upload was aborted');
    t.deepEqual(await keysUnder(prefix), ['lazyboot-repository']);
    const check = await lazyboot(['repo', 'check', '--repo', repo]);
    t.is(check.stdout, `${repo}: 0 image(s), 0 pack(s); 0 problem(s)`);
  }));
