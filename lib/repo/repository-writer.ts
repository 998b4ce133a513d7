// The repository side of the write path (write-target.ts) over a Repository: every check of a
// session's input lives here, whether the client is in-process or speaks through `repo serve`.
import { createHash } from 'node:crypto';
import type { Repository } from './repository.js';
import { BlockMissing, BlockDigestMismatch, ImageShapeMismatch, MalformedWriteRequest, UnknownImage, UnknownParent, VersionConflict } from './errors.js';
import { DIGEST_BYTES, isZeroDigest, isZeroDigestAt, type Manifest } from './manifest-format.js';
import { formatImageRef, parseImageRef, validateImageName } from './image-name.js';
import { parseBlockSize, MAX_BLOCK_SIZE } from './block-size.js';
import type { CommitResult, ImageCommit, ObjectCommit, ObjectCommitResult, ObjectSummary, OfferedBlock, SessionRequest, SessionStart, StoredBlocks, WireCounters, WriteTarget } from './write-target.js';
import { checkObjectId, checkObjectKind, type ImageVersion } from './image-objects.js';
import { SESSION_ID_PATTERN } from './write-target.js';

export class RepositoryWriter implements WriteTarget {
  /** With `ownsRepository`, close() closes the repository too (a writer opened for one `--to`). */
  constructor(private readonly repo: Repository, readonly uri: string = repo.dir, private readonly ownsRepository = false) {}

  async manifest(ref: string): Promise<Buffer | undefined> {
    try {
      return await this.repo.manifestBytes(ref);
    } catch (error) {
      if (error instanceof UnknownImage) return undefined;
      throw error;
    }
  }

  async begin(request: SessionRequest): Promise<SessionStart> {
    validateImageName(request.name);
    await this.checkShape(request);
    const versions = await this.repo.versions(request.name);
    return { version: (versions[versions.length - 1] ?? 0) + 1 };
  }

  /** The parent exists and has the new version's size and block size. */
  private async checkShape(request: SessionRequest): Promise<Manifest | undefined> {
    const blockSize = parseBlockSize(request.blockSize);
    if (!Number.isSafeInteger(request.size) || request.size < 0) throw new MalformedWriteRequest(`size ${JSON.stringify(request.size)} is not a byte count`);
    if (request.parent === undefined) return undefined;
    if (parseImageRef(request.parent).version === undefined) throw new MalformedWriteRequest(`parent ${JSON.stringify(request.parent)} names no version (use NAME@N)`);
    let parent: Manifest;
    try {
      parent = await this.repo.resolve(request.parent);
    } catch (error) {
      if (error instanceof UnknownImage) throw new UnknownParent(request.parent);
      throw error;
    }
    if (parent.size !== request.size || parent.blockSize !== blockSize) {
      throw new ImageShapeMismatch(`the new version of ${request.name} would be ${request.size} bytes in ${blockSize}-byte blocks, but its parent ${request.parent} is ${parent.size} bytes in ${parent.blockSize}-byte blocks`);
    }
    return parent;
  }

  async missing(digests: Buffer): Promise<Uint8Array> {
    if (digests.length % DIGEST_BYTES !== 0) throw new MalformedWriteRequest(`${digests.length} bytes of digests is not a whole number of 32-byte digests`);
    await this.repo.refreshIndexes();
    const count = digests.length / DIGEST_BYTES;
    const offered: Buffer[] = [];
    for (let at = 0; at < digests.length; at += DIGEST_BYTES) if (!isZeroDigestAt(digests, at)) offered.push(digests.subarray(at, at + DIGEST_BYTES));
    await this.repo.keepAlive(offered); // the session will refer to what it is told is present
    const lacking = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      const at = i * DIGEST_BYTES;
      if (!isZeroDigestAt(digests, at) && !this.repo.holdsLoaded(digests.subarray(at, at + DIGEST_BYTES))) lacking[i] = 1;
    }
    return lacking;
  }

  async putBlocks(blocks: Iterable<OfferedBlock> | AsyncIterable<OfferedBlock>): Promise<StoredBlocks> {
    const batch = this.repo.beginBlocks();
    try {
      for await (const block of blocks) {
        if (block.digest.length !== DIGEST_BYTES) throw new MalformedWriteRequest(`a digest of ${block.digest.length} bytes`);
        if (block.data.length === 0 || block.data.length > MAX_BLOCK_SIZE) throw new MalformedWriteRequest(`a block of ${block.data.length} bytes (1 byte to 4 MiB)`);
        const { digest } = await batch.put(block.data);
        // An all-zero block is offered under the zero digest, never under SHA-256 of zeros.
        if (!digest.equals(block.digest)) throw new BlockDigestMismatch(block.digest.toString('hex'), digest.toString('hex'));
      }
      await batch.seal();
    } catch (error) {
      await batch.abort();
      throw error;
    }
    return { stored: batch.newBlocks, present: batch.presentBlocks };
  }

  async commitImage(commit: ImageCommit): Promise<CommitResult> {
    validateImageName(commit.name);
    if (!SESSION_ID_PATTERN.test(commit.session)) throw new MalformedWriteRequest(`session id ${JSON.stringify(commit.session)}`);
    if (!Number.isSafeInteger(commit.version) || commit.version < 1) throw new MalformedWriteRequest(`version ${JSON.stringify(commit.version)}`);
    const done = await this.committedBefore(commit);
    if (done) return done;
    await this.checkShape(commit);
    const blockSize = commit.blockSize;
    const blockCount = Math.ceil(commit.size / blockSize);
    if (commit.digests.length !== blockCount * DIGEST_BYTES) {
      throw new ImageShapeMismatch(`the digest table of ${commit.name} lists ${Math.floor(commit.digests.length / DIGEST_BYTES)} blocks, but ${commit.size} bytes in ${blockSize}-byte blocks are ${blockCount}`);
    }
    await this.checkBlocksStored(commit, blockCount);
    const manifest = await this.repo.commitImage({
      name: commit.name, size: commit.size, blockSize, digests: commit.digests, version: commit.version, session: commit.session,
      ...(commit.parent !== undefined ? { parent: commit.parent } : {}),
    });
    return this.resultOf(manifest, false);
  }

  /** A retry: the version this session committed with this very content, if there is one. */
  private async committedBefore(commit: ImageCommit): Promise<CommitResult | undefined> {
    const versions = await this.repo.versions(commit.name);
    for (let i = versions.length - 1; i >= 0; i--) {
      const manifest = await this.repo.resolve(formatImageRef(commit.name, versions[i]!));
      if (manifest.session === commit.session && manifest.parent === commit.parent && manifest.size === commit.size && manifest.digests.equals(commit.digests)) {
        return this.resultOf(manifest, true);
      }
    }
    return undefined;
  }

  /** Every block the new version names is stored, with its expected length (the last block is short). */
  private async checkBlocksStored(commit: ImageCommit, blockCount: number): Promise<void> {
    const checked = new Set<string>();
    for (let index = 0; index < blockCount; index++) {
      const digest = commit.digests.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
      if (isZeroDigest(digest)) continue;
      const expected = Math.min(commit.blockSize, commit.size - index * commit.blockSize);
      const key = `${digest.toString('latin1')}/${expected}`;
      if (checked.has(key)) continue;
      checked.add(key);
      const length = await this.repo.storedLength(digest);
      if (length === undefined) throw new BlockMissing(digest.toString('hex'), `block ${index} of the new version of ${commit.name} was never sent`);
      if (length !== expected) throw new ImageShapeMismatch(`block ${index} of the new version of ${commit.name} is stored with ${length} bytes where ${expected} are expected`);
    }
  }

  private async resultOf(manifest: Manifest, existing: boolean): Promise<CommitResult> {
    const ref = formatImageRef(manifest.name, manifest.version);
    const manifestDigest = createHash('sha256').update(await this.repo.manifestBytes(ref)).digest('hex');
    return { ref, version: manifest.version, manifestDigest, existing };
  }

  async commitObject(commit: ObjectCommit): Promise<ObjectCommitResult> {
    const image = await this.existingVersion(commit.image);
    const kind = checkObjectKind(commit.kind);
    const id = checkObjectId(commit.session);
    if (!Buffer.isBuffer(commit.data)) throw new MalformedWriteRequest('an object without data');
    if (commit.keep !== undefined && (!Number.isSafeInteger(commit.keep) || commit.keep < 1)) throw new MalformedWriteRequest(`keep ${JSON.stringify(commit.keep)} (a count from 1)`);
    let existing = false;
    if (!(await this.repo.objects.create(image, kind, id, commit.data))) {
      // A retry of this session finds its object; another content under the same id is a conflict.
      const stored = await this.repo.objects.read(image, kind, id);
      if (!stored?.equals(commit.data)) throw new VersionConflict(`${commit.image} ${kind} ${id}`);
      existing = true;
    }
    const others = (await this.repo.objects.list(kind, image)).filter((object) => object.id !== id);
    const drop = commit.replace ? others : others.slice(0, Math.max(0, others.length + 1 - (commit.keep ?? Infinity)));
    if (drop.length > 0) await this.repo.objects.remove(image, kind, drop.map((object) => object.id));
    return { image: formatImageRef(image.name, image.version), kind, id, existing };
  }

  async listObjects(kind: string, image?: string): Promise<ObjectSummary[]> {
    checkObjectKind(kind);
    if (image === undefined) return this.repo.objects.list(kind);
    return this.repo.objects.list(kind, await this.existingVersion(image));
  }

  async readObject(image: string, kind: string, id: string): Promise<Buffer | undefined> {
    return this.repo.objects.read(await this.existingVersion(image), kind, id);
  }

  async removeObjects(image: string, kind: string): Promise<number> {
    // Objects of a version that is gone can still be removed: only the reference's form is checked.
    const parsed = parseImageRef(image);
    if (parsed.version === undefined) throw new MalformedWriteRequest(`${JSON.stringify(image)} names no version (use NAME@N)`);
    return this.repo.objects.remove({ name: parsed.name, version: parsed.version }, kind);
  }

  /** `NAME@N` of a version the repository holds (objects belong to one version, never to "the latest"). */
  private async existingVersion(ref: string): Promise<ImageVersion> {
    const parsed = parseImageRef(ref);
    if (parsed.version === undefined) throw new MalformedWriteRequest(`${JSON.stringify(ref)} names no version (use NAME@N)`);
    await this.repo.resolve(ref);
    return { name: parsed.name, version: parsed.version };
  }

  wire(): WireCounters {
    return { bytesSent: 0, bytesReceived: 0 };
  }

  async close(): Promise<void> {
    if (this.ownsRepository) await this.repo.close();
  }
}
