// Shared fixtures for the copy-on-read tests: small random/zero-mixed images imported into a
// real repository, and runners for real NBD clients (qemu-io, qemu-img, nbdcopy).
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { serveRepositoryCli } from './helpers/repo-cli.js';
import { execa } from 'execa';
import { Repository } from '../lib/repo/repository.js';
import type { Manifest } from '../lib/repo/manifest-format.js';

export interface TestImage {
  readonly repoDir: string;
  /** The image as a raw file, for cmp. */
  readonly rawPath: string;
  readonly content: Buffer;
  readonly manifest: Manifest;
  readonly ref: string;
}

/**
 * Blocks cycle through: random, zero, random, random, a repeat of block 0, zero... so runs of
 * absent data blocks, zero blocks and duplicate blocks all occur. Size may end in a short block.
 */
export function mixedContent(size: number, blockSize: number): Buffer {
  const content = Buffer.alloc(size);
  const pattern = ['random', 'zero', 'random', 'random', 'repeat', 'zero', 'random', 'random'];
  for (let offset = 0, i = 0; offset < size; offset += blockSize, i++) {
    const length = Math.min(blockSize, size - offset);
    const kind = pattern[i % pattern.length];
    if (kind === 'random') randomBytes(length).copy(content, offset);
    if (kind === 'repeat') content.copy(content, offset, 0, length);
  }
  return content;
}

export async function makeImage(dir: string, name: string, options: { size: number; blockSize?: number; repoDir?: string; content?: Buffer }): Promise<TestImage> {
  const blockSize = options.blockSize ?? 65536;
  const content = options.content ?? mixedContent(options.size, blockSize);
  const repoDir = options.repoDir ?? join(dir, 'repo');
  const rawPath = join(dir, `${name}.raw`);
  await writeFile(rawPath, content);
  const repo = await Repository.open(repoDir);
  try {
    async function* chunks() {
      for (let at = 0; at < content.length; at += 1 << 20) yield content.subarray(at, Math.min(content.length, at + (1 << 20)));
    }
    const result = await repo.importImage(name, chunks(), { size: content.length, blockSize });
    return { repoDir, rawPath, content, manifest: result.manifest, ref: result.ref };
  } finally {
    await repo.close();
  }
}

export async function qemuIo(uri: string, commands: string[]): Promise<string> {
  const args = ['-f', 'raw'];
  for (const command of commands) args.push('-c', command);
  const result = await execa('qemu-io', [...args, uri], { reject: false });
  const output = `${result.stdout}\n${result.stderr}`;
  if (result.exitCode !== 0 || /error|fail|Pattern verification failed/i.test(output)) {
    throw new Error(`qemu-io ${commands.join(' ; ')} failed (exit ${result.exitCode}): ${output.trim()}`);
  }
  return output;
}

/** Reads [skip, skip+count) blocks of `bs` bytes through a real client (qemu-img dd) into a file. */
export async function qemuImgDd(uri: string, out: string, bs: number, skip: number, count: number): Promise<void> {
  // qemu-img 7.2 counts `count` from the start of the input, skipped blocks included.
  await execa('qemu-img', ['dd', '-f', 'raw', '-O', 'raw', `bs=${bs}`, `skip=${skip}`, `count=${skip + count}`, `if=${uri}`, `of=${out}`]);
}

/** A full read through nbdcopy into a local file. */
export async function nbdcopyTo(uri: string, out: string): Promise<void> {
  await execa('nbdcopy', [uri, out]);
}

/** A real `lazyboot repo serve` process on a unix socket; kill() is SIGKILL. */
export interface RepoServer {
  readonly uri: string;
  readonly pid: number;
  kill(): Promise<void>;
}

/** `extraArgs`: e.g. ['--no-verify'], so that a corrupt block reaches the client's own verification. */
export async function startRepoServer(repoDir: string, socket: string, extraArgs: string[] = []): Promise<RepoServer> {
  return serveRepositoryCli(repoDir, socket, extraArgs);
}

/** Flips one byte inside the stored copy of `block` (found by its content) in a repository's packs. */
export async function corruptStoredBlock(repoDir: string, blockContent: Buffer): Promise<void> {
  const { readdir, open } = await import('node:fs/promises');
  const packs = (await readdir(join(repoDir, 'packs'))).filter((f) => f.endsWith('.pack'));
  const needle = blockContent.subarray(1000, 1064);
  for (const pack of packs) {
    const path = join(repoDir, 'packs', pack);
    const bytes = await (await import('node:fs/promises')).readFile(path);
    const at = bytes.indexOf(needle);
    if (at < 0) continue;
    const file = await open(path, 'r+');
    await file.write(Buffer.from([bytes[at]! ^ 0xff]), 0, 1, at);
    await file.close();
    return;
  }
  throw new Error('block content not found in any pack');
}
