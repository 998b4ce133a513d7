// The repository's write path (offer digests, send what is lacking, commit atomically), the same
// checks in-process over a directory and through a real `lazyboot repo serve --write-socket`.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { request as httpRequest } from 'node:http';
import { makeImage } from './cor-fixtures.js';
import { startServing } from './helpers/served-process.js';
import { openWriteTarget } from '../lib/write/open-write-target.js';
import type { WriteTarget } from '../lib/repo/write-target.js';
import { Repository } from '../lib/repo/repository.js';
import { DIGEST_BYTES } from '../lib/repo/manifest-format.js';
import { BlockDigestMismatch, BlockMissing, ImageShapeMismatch, UnknownParent, VersionConflict } from '../lib/repo/errors.js';
import { WriteTargetUnreachable } from '../lib/write/errors.js';
import { CLI } from './helpers/cli-path.js';

const BS = 65536;
const sha = (data: Buffer) => createHash('sha256').update(data).digest();

type Transport = 'directory' | 'repo serve';

/** The target over `transport`, closed (and its server stopped) afterwards. */
async function withTarget(transport: Transport, repoDir: string, body: (target: WriteTarget, uri: string) => Promise<void>): Promise<void> {
  if (transport === 'directory') {
    const target = await openWriteTarget(repoDir);
    try { await body(target, repoDir); } finally { await target.close(); }
    return;
  }
  const server = await startServing(['repo', 'serve', '--repo', repoDir, '--socket', join(repoDir, '..', 'r.sock'), '--write-socket', join(repoDir, '..', 'w.sock')]);
  try {
    const uri = `http+unix:///?socket=${join(repoDir, '..', 'w.sock')}`;
    const target = await openWriteTarget(uri);
    try { await body(target, uri); } finally { await target.close(); }
  } finally {
    await server.stop();
  }
}

/** Digest table of the parent with blocks `changed` replaced. */
function withChanges(parentDigests: Buffer, changed: Map<number, Buffer>): Buffer {
  const digests = Buffer.from(parentDigests);
  for (const [index, data] of changed) sha(data).copy(digests, index * DIGEST_BYTES);
  return digests;
}

for (const transport of ['directory', 'repo serve'] as const) {
  test(`${transport}: a session sends only lacking blocks, commits NAME@2 sharing every unchanged block, and a retry adds nothing`, (t) => withDir(async ({ path: dir }) => {
    const image = await makeImage(dir, 'base', { size: 16 * BS });
    await withTarget(transport, image.repoDir, async (target) => {
      const start = await target.begin({ name: 'base', parent: 'base@1', size: image.content.length, blockSize: BS });
      t.is(start.version, 2);
      const fresh = randomBytes(BS);
      const known = image.content.subarray(0, BS); // block 0's content, written at block 5
      const changed = new Map([[3, fresh], [5, Buffer.from(known)]]);
      const digests = withChanges(image.manifest.digests, changed);
      const offer = Buffer.concat([sha(fresh), sha(known)]);
      t.deepEqual([...(await target.missing(offer))], [1, 0], 'only the new content is lacking');
      const before = await packBytes(image.repoDir);
      t.deepEqual(await target.putBlocks([{ digest: sha(fresh), data: fresh }]), { stored: 1, present: 0 });
      t.is(await packBytes(image.repoDir) - before, BS, 'the repository grew by the one new block');
      const session = 'session-aaaaaaaa';
      const commit = { name: 'base', version: 2, parent: 'base@1', size: image.content.length, blockSize: BS, digests, session };
      const result = await target.commitImage(commit);
      t.like(result, { ref: 'base@2', version: 2, existing: false });
      const retry = await target.commitImage(commit);
      t.like(retry, { ref: 'base@2', existing: true, manifestDigest: result.manifestDigest }, 'the retried commit finds its version');
      const repo = await Repository.open(image.repoDir, { create: false });
      try {
        t.deepEqual(await repo.versions('base'), [1, 2]);
        const parent = await repo.resolve('base@1');
        t.true(parent.digests.equals(image.manifest.digests), 'the parent is unchanged');
        const child = await repo.resolve('base@2');
        t.is(child.parent, 'base@1');
        for (let i = 0; i < 16; i++) {
          const same = child.digests.subarray(i * 32, i * 32 + 32).equals(parent.digests.subarray(i * 32, i * 32 + 32));
          t.is(same, !changed.has(i), `block ${i}`);
        }
        t.deepEqual((await repo.checkImage(child, { verify: true })).problems, []);
      } finally {
        await repo.close();
      }
    });
  }, { unsafeCleanup: true }));

  test(`${transport}: bad input is refused with a typed one-line error and changes nothing`, (t) => withDir(async ({ path: dir }) => {
    const image = await makeImage(dir, 'base', { size: 8 * BS + 1000 });
    await withTarget(transport, image.repoDir, async (target) => {
      const size = image.content.length;
      await t.throwsAsync(target.begin({ name: 'base', parent: 'base@7', size, blockSize: BS }), { instanceOf: UnknownParent, message: /parent image base@7 is not in the repository/ });
      await t.throwsAsync(target.begin({ name: 'base', parent: 'base@1', size: size + BS, blockSize: BS }), { instanceOf: ImageShapeMismatch, message: /is 525288 bytes/ });
      const data = randomBytes(BS);
      await t.throwsAsync(target.putBlocks([{ digest: sha(randomBytes(8)), data }]), { instanceOf: BlockDigestMismatch, message: /hashes to/ });
      t.deepEqual([...(await target.missing(sha(data)))], [1], 'the refused block was not stored');
      const session = 'session-bbbbbbbb';
      const base = { name: 'base', version: 2, parent: 'base@1', size, blockSize: BS, session };
      await t.throwsAsync(target.commitImage({ ...base, digests: withChanges(image.manifest.digests, new Map([[2, data]])) }),
        { instanceOf: BlockMissing, message: /block 2 of the new version of base was never sent/ });
      // The last block is 1000 bytes long: a full block stored under its place is the wrong size.
      await target.putBlocks([{ digest: sha(data), data }]);
      await t.throwsAsync(target.commitImage({ ...base, digests: withChanges(image.manifest.digests, new Map([[8, data]])) }),
        { instanceOf: ImageShapeMismatch, message: /block 8 .* stored with 65536 bytes where 1000 are expected/ });
      await t.throwsAsync(target.commitImage({ ...base, digests: image.manifest.digests.subarray(32) }), { instanceOf: ImageShapeMismatch, message: /lists 8 blocks/ });
      const repo = await Repository.open(image.repoDir, { create: false });
      t.deepEqual(await repo.versions('base'), [1], 'no version was created');
      await repo.close();
    });
  }, { unsafeCleanup: true }));

  test(`${transport}: two sessions from one parent: the first commit wins, the second gets VersionConflict`, (t) => withDir(async ({ path: dir }) => {
    const image = await makeImage(dir, 'base', { size: 4 * BS });
    await withTarget(transport, image.repoDir, async (target) => {
      const request = { name: 'base', parent: 'base@1', size: image.content.length, blockSize: BS };
      const [a, b] = [await target.begin(request), await target.begin(request)];
      t.is(a.version, 2);
      t.is(b.version, 2);
      const commit = { ...request, version: 2, digests: image.manifest.digests };
      const results = await Promise.allSettled([target.commitImage({ ...commit, session: 'session-first000' }), target.commitImage({ ...commit, session: 'session-second00' })]);
      t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
      const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      t.true(refused.reason instanceof VersionConflict);
      t.regex(refused.reason.message, /^base@2 was committed by another writer while this session ran$/);
    });
  }, { unsafeCleanup: true }));
}

test('repo serve: an upload cut by the server being killed leaves no block or version; a retry completes', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'base', { size: 4 * BS });
  const writeSocket = join(dir, 'w.sock');
  const args = ['repo', 'serve', '--repo', image.repoDir, '--socket', join(dir, 'r.sock'), '--write-socket', writeSocket];
  const blocks = Array.from({ length: 64 }, () => randomBytes(BS));
  let server = await startServing(args);
  const target = await openWriteTarget(`http+unix:///?socket=${writeSocket}`);
  try {
    const slow = (async function* () {
      for (const [i, data] of blocks.entries()) {
        if (i === 32) { process.kill(server.pid, 'SIGKILL'); await new Promise((r) => setTimeout(r, 200)); }
        yield { digest: sha(data), data };
      }
    })();
    await t.throwsAsync(target.putBlocks(slow), { instanceOf: WriteTargetUnreachable, message: /cannot write to the repository at http\+unix/ });
    // A cut upload leaves at most a pack without an index (invisible), which --repair removes.
    const bin = CLI;
    const repair = await execa('node', [bin, 'repo', 'check', '--repair', '--repo', image.repoDir], { reject: false });
    t.is(repair.exitCode, 0, repair.stdout + repair.stderr);
    t.regex(repair.stdout, /1 image\(s\), 1 pack\(s\); 0 problem\(s\)/);
    server = await startServing(args);
    const lacking = await target.missing(Buffer.concat(blocks.map(sha)));
    t.deepEqual([...lacking], blocks.map(() => 1), 'nothing of the cut upload is visible');
    t.deepEqual(await target.putBlocks(blocks.map((data) => ({ digest: sha(data), data }))), { stored: 64, present: 0 });
    t.deepEqual([...(await target.missing(Buffer.concat(blocks.map(sha))))], blocks.map(() => 0));
  } finally {
    await target.close();
    await server.stop();
  }
}, { unsafeCleanup: true }));

async function packBytes(repoDir: string): Promise<number> {
  const { stat } = await import('node:fs/promises');
  let total = 0;
  for (const name of await readdir(join(repoDir, 'packs'))) if (name.endsWith('.pack')) total += (await stat(join(repoDir, 'packs', name))).size;
  return total;
}

/** One raw HTTP request to the write socket: status and JSON body. */
function rawRequest(socketPath: string, method: string, path: string, body?: Buffer): Promise<{ status: number; json: { error?: string; message?: string } }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ socketPath, method, path }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, json: response.headers['content-type'] === 'application/json' ? JSON.parse(Buffer.concat(chunks).toString()) : {} }));
    });
    request.on('error', reject);
    request.end(body);
  });
}

test('repo serve: malformed write requests (bad JSON, a null body, a broken %-escape) are 400 MalformedWriteRequest, never an internal error', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'base', { size: 4 * BS });
  const socket = join(dir, 'w.sock');
  const server = await startServing(['repo', 'serve', '--repo', image.repoDir, '--socket', join(dir, 'r.sock'), '--write-socket', socket]);
  try {
    for (const body of ['{', '', 'null', '"text"', '[1]', '{"size":65536,"blockSize":65536}']) {
      const { status, json } = await rawRequest(socket, 'POST', '/v1/sessions', Buffer.from(body));
      t.is(status, 400, `session body ${JSON.stringify(body)}: ${json.message}`);
      t.is(json.error, 'MalformedWriteRequest', `session body ${JSON.stringify(body)}`);
    }
    const broken = await rawRequest(socket, 'GET', '/v1/manifests/%E0%A4%A');
    t.is(broken.status, 400, String(broken.json.message));
    t.is(broken.json.error, 'MalformedWriteRequest');
    t.is((await rawRequest(socket, 'GET', '/v1/manifests/base')).status, 200, 'the server still answers');
  } finally {
    await server.stop();
  }
}, { unsafeCleanup: true }));
