// The cold full read the storage benchmarks time (bench-cor, bench-store): a synthetic image of
// 64 KiB blocks, one in four zero and the rest random, imported into any repository (a directory
// or s3://); a fresh copy-on-read device over it (`lazyboot disk serve --no-cache`); nbdcopy
// reading every byte of it to null:.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { repositoryRoot } from '../fixtures/build.js';
import { Repository } from '../lib/repo/repository.js';
import { startServer, type ServerProcess } from './bench-kit.js';

const BIN = join(repositoryRoot(), 'bin', 'lazyboot.js');
const MIB = 1024 * 1024;
export const BENCH_BLOCK_SIZE = 65536;

/** `size` bytes in 64 KiB blocks: block 1 of every 4 zero, the others random (no dedup). */
export function benchImageBytes(size: number): Buffer {
  const content = Buffer.alloc(size);
  for (let offset = 0, i = 0; offset < size; offset += BENCH_BLOCK_SIZE, i++) {
    if (i % 4 !== 1) randomBytes(Math.min(BENCH_BLOCK_SIZE, size - offset)).copy(content, offset);
  }
  return content;
}

/** Imports `content` as `name` into the repository at `uri` (a directory or s3://BUCKET/PREFIX), created if missing. */
export async function importBytes(uri: string, name: string, content: Buffer): Promise<void> {
  const repo = await Repository.open(uri, { create: true });
  try {
    async function* chunks() { for (let at = 0; at < content.length; at += 4 * MIB) yield content.subarray(at, Math.min(content.length, at + 4 * MIB)); }
    await repo.importImage(name, chunks(), { size: content.length, blockSize: BENCH_BLOCK_SIZE });
  } finally {
    await repo.close();
  }
}

/** A fresh COR device serving `image` on `socket` (export "disk"), its blocks fetched from `from`. */
export function serveDisk(image: string, disk: string, from: string, socket: string, extra: readonly string[] = []): Promise<ServerProcess> {
  // --no-cache: every cold read starts cold (the host-wide block cache would serve repeat runs).
  return startServer('node', [BIN, 'disk', 'serve', image, '--disk', disk, '--from', from, '--socket', socket, '--no-cache', ...extra], socket);
}

/** Milliseconds nbdcopy takes to read every byte of `uri` (--no-extents: holes are read too, on every side alike). */
export async function timedCopy(uri: string, readerArgs: readonly string[] = []): Promise<number> {
  const started = process.hrtime.bigint();
  await execa('nbdcopy', ['--no-extents', ...readerArgs, uri, 'null:']);
  return Number(process.hrtime.bigint() - started) / 1e6;
}

/** Whether the COR disk at `disk` has every block present (after a full cold read it must). */
export async function diskComplete(disk: string): Promise<boolean> {
  const status = JSON.parse((await execa('node', [BIN, 'disk', 'status', '--disk', disk, '--json'])).stdout) as { complete?: boolean };
  return status.complete === true;
}
