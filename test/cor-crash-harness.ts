// Crash-safety harness (shared by test/cor-crash.test.ts and scripts/stress-cor): runs
// `lazyboot disk serve --fill` as a real process, drives writes + flushes through qemu-io, kills
// the server with SIGKILL at a random moment, restarts, and checks the invariants on disk:
//  - every present, unmodified block matches its manifest digest;
//  - every write acknowledged before a completed flush reads back, and W covers its blocks
//    (and R, so a restarted device never refetches over it).
import { createHash, randomInt } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { BlockMap } from '../lib/map/block-map.js';
import { digestOf, isZeroDigest, type Manifest } from '../lib/repo/manifest-format.js';
import { isAllZero } from '../lib/block/zero-bytes.js';
import { makeImage } from './cor-fixtures.js';
import { CLI as BIN } from './helpers/cli-path.js';

const BS = 65536;

export interface CrashOptions {
  readonly dir: string;
  readonly iterations: number;
  /** Image size in blocks of 64 KiB. */
  readonly blocks: number;
  /** Background fill rate, bytes/s. */
  readonly fillRate: number;
  readonly log?: (line: string) => void;
}

export interface CrashResult {
  iterations: number;
  confirmedWrites: number;
  uncertainBatches: number;
  presentAfterEachKill: number[];
  violations: string[];
}

interface ConfirmedWrite { offset: number; length: number; pattern: number }

async function startServe(args: string[]): Promise<{ child: ResultPromise; uri: string }> {
  const child = execa('node', [BIN, 'disk', 'serve', ...args], { reject: false, buffer: false, stdin: 'ignore', stderr: 'pipe' });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-4000); });
  const uri = await new Promise<string>((resolve, reject) => {
    let seen = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      const match = / at (nbd\+unix:\S+)/.exec(seen);
      if (match) resolve(match[1]!);
    });
    child.on('exit', (code) => reject(new Error(`disk serve exited (${code}) before serving: ${seen} ${stderr}`)));
  });
  return { child, uri };
}

/** Checks the invariants on the files of a killed device. Returns the number of present blocks. */
async function checkInvariants(disk: string, manifest: Manifest, confirmed: ConfirmedWrite[], violations: string[], when: string): Promise<number> {
  const map = await BlockMap.open(`${disk}.map`, async () => {});
  const file = await open(disk, 'r');
  try {
    const block = Buffer.alloc(BS);
    for (let b = 0; b < manifest.blockCount; b++) {
      if (!map.isPresent(b) || map.isModified(b)) continue;
      const length = Math.min(BS, manifest.size - b * BS);
      await file.read(block, 0, length, b * BS);
      const data = block.subarray(0, length);
      const expected = digestOf(manifest, b);
      const ok = isZeroDigest(expected) ? isAllZero(data) : createHash('sha256').update(data).digest().equals(expected);
      if (!ok) violations.push(`${when}: block ${b} is present and unmodified but does not match its digest`);
    }
    for (const write of confirmed) {
      const data = Buffer.alloc(write.length);
      await file.read(data, 0, write.length, write.offset);
      if (!data.equals(Buffer.alloc(write.length, write.pattern))) violations.push(`${when}: flushed write at ${write.offset}+${write.length} did not survive`);
      for (let b = Math.floor(write.offset / BS); b <= Math.floor((write.offset + write.length - 1) / BS); b++) {
        if (!map.isModified(b)) violations.push(`${when}: block ${b} holds a flushed write but W is clear`);
        if (!map.isPresent(b)) violations.push(`${when}: block ${b} holds a flushed write but R is clear (would be refetched)`);
      }
    }
    return map.counts().present;
  } finally {
    await file.close();
    await map.close();
  }
}

export async function runCrashIterations(options: CrashOptions): Promise<CrashResult> {
  const { dir, blocks } = options;
  const log = options.log ?? (() => {});
  const image = await makeImage(dir, 'crash', { size: blocks * BS });
  const disk = join(dir, 'disk.raw');
  const confirmed: ConfirmedWrite[] = [];
  const usedBlocks = new Set<number>();
  const result: CrashResult = { iterations: 0, confirmedWrites: 0, uncertainBatches: 0, presentAfterEachKill: [], violations: [] };
  const freshBlock = () => {
    for (;;) {
      const b = randomInt(blocks);
      if (!usedBlocks.has(b)) { usedBlocks.add(b); return b; }
    }
  };

  for (let iteration = 0; iteration < options.iterations; iteration++) {
    if (usedBlocks.size > blocks * 0.8) break; // keep room for fresh targets
    const socket = join(dir, `cor-${iteration}.sock`);
    const { child, uri } = await startServe(['crash', '--disk', disk, '--from', image.repoDir, '--socket', socket, '--fill', '--fill-rate', String(options.fillRate)]);
    let killed = false;
    const killAfter = randomInt(100, 900);
    // The kill clock starts when qemu-io's first write came back, not when the server is up: on a
    // loaded machine qemu-io can take longer than the whole window to connect, and a kill before
    // any write would test nothing. A cap keeps a qemu-io that never answers from hanging the test.
    let killer: NodeJS.Timeout | undefined;
    const armKiller = () => { killer ??= setTimeout(() => { killed = true; child.kill('SIGKILL'); }, killAfter); };
    const armAnyway = setTimeout(armKiller, 30_000);
    // One qemu-io session (cache=writeback: qemu-io defaults to writethrough, which would flush
    // after every write) streams writes; every third batch ends with `flush` then `length` as a
    // marker. Writes count as flushed only when the marker after their flush printed and nothing
    // in between failed; writes after the last good flush stay uncertain (and must not break the
    // "present and unmodified matches its digest" rule either).
    const session = execa('qemu-io', ['-f', 'raw', '-t', 'writeback', uri], { reject: false, buffer: false, stdin: 'pipe', stderr: 'pipe' });
    let output = '';
    session.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('wrote ')) armKiller();
    });
    session.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    let issued: ConfirmedWrite[] = [];
    let checkedUpTo = 0;
    const awaitingMarker: Array<{ writes: ConfirmedWrite[]; outputFrom: number }> = [];
    const markerCount = () => (output.match(/^(?:qemu-io> )*[\d.]+ [KMGT]iB$/gm) ?? []).length;
    for (let batchNumber = 0; !killed; batchNumber++) {
      const batch: ConfirmedWrite[] = [];
      for (let i = 0; i < 3; i++) {
        const b = freshBlock();
        const pattern = randomInt(1, 256);
        const whole = randomInt(2) === 0;
        const offset = whole ? b * BS : b * BS + randomInt(0, BS / 2);
        const length = whole ? BS : randomInt(512, BS / 2);
        batch.push({ offset, length, pattern });
      }
      issued.push(...batch);
      let commands = batch.map((w) => `write -P ${w.pattern} ${w.offset} ${w.length}\n`).join('');
      if (batchNumber % 3 === 2) {
        awaitingMarker.push({ writes: issued, outputFrom: output.length });
        issued = [];
        commands += 'flush\nlength\n';
      }
      if (!session.stdin!.writable) break;
      session.stdin!.write(commands);
      // Pace like a guest; meanwhile confirm batches whose marker arrived cleanly.
      await new Promise((r) => setTimeout(r, randomInt(20, 80)));
      const seen = markerCount();
      while (checkedUpTo < seen && awaitingMarker.length > 0) {
        const { writes, outputFrom } = awaitingMarker.shift()!;
        checkedUpTo++;
        const slice = output.slice(outputFrom);
        const clean = !/error|fail/i.test(slice.slice(0, slice.search(/^(?:qemu-io> )*[\d.]+ [KMGT]iB$/m) + 1));
        const allWritten = writes.every((w) => slice.includes(`wrote ${w.length}/${w.length} bytes at offset ${w.offset}`)
          || output.includes(`wrote ${w.length}/${w.length} bytes at offset ${w.offset}`));
        if (clean && allWritten && !killed) {
          confirmed.push(...writes);
          result.confirmedWrites += writes.length;
        } else {
          result.uncertainBatches++;
        }
      }
    }
    result.uncertainBatches += awaitingMarker.length + (issued.length > 0 ? 1 : 0);
    session.kill('SIGKILL');
    await session;
    clearTimeout(killer);
    clearTimeout(armAnyway);
    await child;
    await rm(socket, { force: true });
    const present = await checkInvariants(disk, image.manifest, confirmed, result.violations, `after kill ${iteration} (${killAfter} ms)`);
    result.presentAfterEachKill.push(present);
    result.iterations++;
    log(`kill ${iteration} at ${killAfter} ms: ${present}/${blocks} present, ${confirmed.length} flushed writes so far, ${result.violations.length} violations`);
  }

  // Finally let the fill finish (resumed from the map) and check the whole disk once more.
  const socket = join(dir, 'cor-final.sock');
  const { child, uri } = await startServe(['crash', '--disk', disk, '--from', image.repoDir, '--socket', socket, '--fill']);
  for (;;) {
    const status = await execa('node', [BIN, 'disk', 'status', '--disk', disk, '--json'], { reject: false });
    if (status.exitCode === 0 && JSON.parse(status.stdout).complete) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  // Flushed writes also read back through the device (a real client), pattern-checked.
  for (const write of confirmed.slice(0, 30)) {
    const check = await execa('qemu-io', ['-f', 'raw', '-c', `read -P ${write.pattern} ${write.offset} ${write.length}`, uri], { reject: false });
    if (/fail|error/i.test(`${check.stdout}${check.stderr}`)) result.violations.push(`final: qemu-io read of ${write.offset}+${write.length} failed the pattern check`);
  }
  child.kill('SIGTERM');
  await child;
  await checkInvariants(disk, image.manifest, confirmed, result.violations, 'after the final fill');
  return result;
}
