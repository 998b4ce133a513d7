// Test helper for the live-snapshot tests: a shell command in the running guest through its agent,
// and a committed version looked at from outside (exported, its root file system checked with
// e2fsck -fn, the files it holds hashed).
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { execa } from 'execa';
import type { LazyVm } from '../../lib/launch.js';
import { CLI } from '../boot-support.js';
import { extractPartition, fsckReadOnly } from './guest-filesystem.js';

/** The root file system's partition in the debian fixtures. */
const ROOT_PARTITION = 2;

/** Runs `script` with /bin/sh in the guest; its stdout, or an error naming the script. */
export async function inGuest(vm: LazyVm, script: string): Promise<string> {
  const result = await vm.exec('/bin/sh', ['-c', script], { timeoutMs: 120_000 });
  if (result.exitCode !== 0) throw new Error(`${script}: exit ${result.exitCode}: ${result.stderr}`);
  return result.stdout;
}

/**
 * Exports REF from the repository, asserts that the export worked and that its root file system
 * checks clean, and returns the sha256 of each of `files` in it ('missing' for one it lacks).
 */
export async function filesInVersion(t: ExecutionContext, scratch: string, repoDir: string, ref: string, files: readonly string[]): Promise<Record<string, string>> {
  const exported = path.join(scratch, `${ref}.raw`);
  const result = await execa('node', [CLI, 'image', 'export', ref, exported, '--repo', repoDir], { reject: false });
  t.is(result.exitCode, 0, result.stderr);
  const root = path.join(scratch, `${ref}-root.ext4`);
  try {
    await extractPartition(exported, ROOT_PARTITION, root);
    const fsck = await fsckReadOnly(root);
    t.true(fsck.clean, `${ref}: ${fsck.output}`);
    const sums: Record<string, string> = {};
    for (const file of files) {
      const copy = path.join(scratch, `${ref}-${path.basename(file)}`);
      const dumped = await execa('debugfs', ['-R', `dump ${file} ${copy}`, root], { reject: false });
      sums[file] = dumped.stderr.includes('not found') ? 'missing' : (await execa('sha256sum', [copy])).stdout.split(' ')[0]!;
    }
    return sums;
  } finally {
    await rm(exported, { force: true });
    await rm(root, { force: true });
  }
}
