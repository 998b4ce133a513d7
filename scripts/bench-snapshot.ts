// Snapshot benchmark (issue 15): a disk of SIZE (default 2 GiB) from an image in the repository,
// with 1 %, 10 % and 50 % of its blocks rewritten through the copy-on-read device (`disk serve` +
// qemu-io). Each fraction is shipped three ways, in the same run:
//   lazyboot snapshot  — `snapshot --to http+unix://…` to `repo serve --write-socket` (W blocks only)
//   whole-disk import  — `image import` of the whole modified disk (what the design replaces; a
//                        copy to a repository host moves every byte of the disk)
//   rsync --inplace    — `rsync --inplace --no-whole-file` of the whole disk onto the previous version
// and reports bytes moved and time, as ratios to lazyboot's.
import { copyFile, mkdtemp, open, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createCipheriv, createHash } from 'node:crypto';
import { execa } from 'execa';
import { runningServers, startServer, stopServer, versionOf, writeReport, type ServerProcess } from './bench-kit.js';
import { measuredCommit } from './bench-freshness.js';

const BIN = new URL('../../bin/lazyboot.js', import.meta.url).pathname;
const BS = 65536;
/** Percentages of blocks modified, e.g. `--percent 1,10,50` (the default). */
const FRACTIONS = option('percent', '1,10,50').split(',').map((text) => Number(text) / 100);

function option(name: string, fallback: string): string {
  // --size-mib MiB (default 2048), --percent 1,10,50, --out FILE
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1]! : fallback;
}

const SIZE = Number(option('size-mib', '2048')) * 1024 * 1024;
const REPORT = option('out', 'bench/results/snapshot.md');

/** Deterministic bytes (AES-256-CTR of zeros keyed by `seed`): the same disk in every run, incompressible. */
function bytesFor(seed: string, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(length));
}

/** `count` distinct block numbers, spread by a seeded shuffle. */
function pickBlocks(total: number, count: number, seed: number): number[] {
  const order = Array.from({ length: total }, (_, i) => i);
  let state = seed;
  for (let i = total - 1; i > 0; i--) {
    state = (state * 1103515245 + 12345) >>> 0;
    const j = state % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order.slice(0, count).sort((a, b) => a - b);
}

async function time<T>(run: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const started = performance.now();
  const value = await run();
  return { value, seconds: (performance.now() - started) / 1000 };
}

interface Row {
  readonly fraction: number;
  readonly dirtyBlocks: number;
  readonly lazyboot: { bytes: number; overhead: number; seconds: number; sent: number };
  readonly whole: { bytes: number; seconds: number };
  readonly rsync: { bytes: number; seconds: number };
}

async function main(): Promise<void> {
  // The rsync baseline needs rsync: say so before minutes of setup, not at the first round.
  if ((await execa('rsync', ['--version'], { reject: false })).exitCode !== 0) {
    throw new Error('rsync is not installed (it is the baseline this bench compares with): apt-get install rsync');
  }
  const dir = await mkdtemp(join(tmpdir(), 'lazyboot-bench-snapshot-'));
  let server: ServerProcess | undefined;
  const cleanup = async () => {
    for (const child of runningServers) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  const loadBefore = loadavg();
  try {
    const repo = join(dir, 'repo');
    const base = join(dir, 'base.raw');
    const blocks = SIZE / BS;
    process.stderr.write(`making a ${SIZE / 2 ** 20} MiB image and importing it…\n`);
    const file = await open(base, 'w');
    for (let at = 0; at < SIZE; at += 16 * 2 ** 20) await file.write(bytesFor(`base/${at}`, Math.min(16 * 2 ** 20, SIZE - at)), 0, Math.min(16 * 2 ** 20, SIZE - at), at);
    await file.close();
    await execa('node', [BIN, 'image', 'import', base, 'base', '--repo', repo]);
    const writeSocket = join(dir, 'w.sock');
    server = await startServer('node', [BIN, 'repo', 'serve', '--repo', repo, '--socket', join(dir, 'r.sock'), '--write-socket', writeSocket], writeSocket);
    const rows: Row[] = [];
    for (const [round, fraction] of FRACTIONS.entries()) {
      const dirty = pickBlocks(blocks, Math.round(blocks * fraction), round + 1);
      process.stderr.write(`${(fraction * 100).toFixed(0)} %: writing ${dirty.length} blocks through disk serve…\n`);
      const disk = join(dir, `disk-${round}.raw`);
      const cor = join(dir, `cor-${round}.sock`);
      const served = await startServer('node', [BIN, 'disk', 'serve', 'base@1', '--disk', disk, '--from', repo, '--socket', cor], cor);
      const full = join(dir, `full-${round}.raw`);
      // Each block distinct, also from other rounds' blocks: a fill byte, and mark bytes at 512
      // (with the fill, unique up to 62 500 blocks) and at 520 (the round).
      // Asynchronous writes, 64 blocks in flight between flushes: the device's W-mark commits are
      // shared by the writes in flight (one synchronous write per block made the 50 % row's setup
      // take many minutes at 2 GiB on a loaded machine). Unmeasured: only the setup.
      const commands: string[] = [];
      for (const [n, index] of dirty.entries()) {
        commands.push(`aio_write -q -P ${(index % 250) + 1} ${index * BS} ${BS}`);
        if (n % 64 === 63) commands.push('aio_flush');
      }
      commands.push('aio_flush');
      // The mark bytes go after the blocks landed (two writes to one place must not race).
      for (const [n, index] of dirty.entries()) {
        commands.push(`aio_write -q -P ${(Math.floor(index / 250) % 250) + 1} ${index * BS + 512} 8`);
        commands.push(`aio_write -q -P ${round + 1} ${index * BS + 520} 8`);
        if (n % 256 === 255) commands.push('aio_flush');
      }
      commands.push('aio_flush');
      const written = await time(() => execa('qemu-io', ['-f', 'raw', `nbd+unix:///disk?socket=${cor}`], { input: commands.join('\n') + '\nquit\n' }));
      process.stderr.write(`  written in ${written.seconds.toFixed(1)} s\n`);
      await stopServer(served);
      await materialize(base, disk, full, dirty);

      const snap = await time(() => execa('node', [BIN, 'snapshot', '--disk', disk, '--to', `http+unix:///?socket=${writeSocket}`, '--as', `snap-${round}`, '--json']));
      const summary = JSON.parse(snap.value.stdout);
      const wire = summary.wireBytesSent + summary.wireBytesReceived;
      const whole = await time(() => execa('node', [BIN, 'image', 'import', full, `whole-${round}`, '--repo', repo]));
      const previous = join(dir, `previous-${round}.raw`);
      await copyFile(base, previous);
      const rsync = await time(() => execa('rsync', ['--inplace', '--no-whole-file', '--stats', full, previous]));
      const sent = Number(/Total bytes sent: ([\d,.]+)/.exec(rsync.value.stdout)![1]!.replace(/[,.]/g, ''));
      const received = Number(/Total bytes received: ([\d,.]+)/.exec(rsync.value.stdout)![1]!.replace(/[,.]/g, ''));
      await execa('cmp', [full, previous]);
      rows.push({
        fraction, dirtyBlocks: dirty.length,
        lazyboot: { bytes: wire, overhead: summary.overheadBytes, seconds: snap.seconds, sent: summary.sentBlocks },
        whole: { bytes: SIZE, seconds: whole.seconds },
        rsync: { bytes: sent + received, seconds: rsync.seconds },
      });
      process.stderr.write(`  lazyboot ${(wire / 2 ** 20).toFixed(1)} MiB ${snap.seconds.toFixed(1)} s; import ${whole.seconds.toFixed(1)} s; rsync ${((sent + received) / 2 ** 20).toFixed(1)} MiB ${rsync.seconds.toFixed(1)} s\n`);
      for (const path of [disk, `${disk}.map`, full, previous]) await rm(path, { force: true });
      // Written after every row: a long run stopped early keeps what it measured.
      await writeReport(REPORT, await report(rows, loadBefore));
    }
    await stopServer(server);
    server = undefined;
    await writeReport(REPORT, await report(rows, loadBefore));
    process.stdout.write(`${await report(rows, loadBefore)}\n`);
  } finally {
    await stopServer(server);
    await cleanup();
  }
}

/** The reference disk for import and rsync: the base image with the device's blocks (read back) in place. */
async function materialize(base: string, disk: string, full: string, dirty: readonly number[]): Promise<void> {
  await copyFile(base, full);
  const from = await open(disk, 'r');
  const to = await open(full, 'r+');
  const block = Buffer.alloc(BS);
  for (const index of dirty) {
    await from.read(block, 0, BS, index * BS);
    await to.write(block, 0, BS, index * BS);
  }
  await from.close();
  await to.close();
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

async function report(rows: readonly Row[], loadBefore: number[]): Promise<string> {
  const lines = [
    '# Snapshot: lazyboot snapshot vs whole-disk import vs rsync --inplace',
    '',
    `A ${SIZE / 2 ** 30 >= 1 ? `${SIZE / 2 ** 30} GiB` : `${SIZE / 2 ** 20} MiB`} disk (64 KiB blocks, incompressible content) from an image in the repository; a fraction of its`,
    'blocks rewritten with new, distinct content through `disk serve` by qemu-io. Shipped three ways, in one run:',
    '`lazyboot snapshot` to `repo serve --write-socket` (bytes: both directions on the socket, as the',
    'snapshot counts them); `image import` of the whole modified disk into the same repository (bytes: the',
    'disk, what a whole-disk copy to a repository host moves; time: the local import, no network);',
    '`rsync --inplace --no-whole-file --stats` of the whole disk onto a copy of the previous version',
    '(bytes: sent + received by rsync). Ratios are to lazyboot snapshot (> 1: lazyboot moves less / is faster).',
    '',
    '| modified | dirty data | lazyboot bytes (overhead) | lazyboot time | whole-disk bytes ratio | whole-disk import time | ratio | rsync bytes (ratio) | rsync time | ratio |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const row of rows) {
    const dirtyBytes = row.dirtyBlocks * BS;
    lines.push(`| ${(row.fraction * 100).toFixed(0)} % | ${row.dirtyBlocks} blocks, ${mib(dirtyBytes)} MiB | ${mib(row.lazyboot.bytes)} MiB (${(row.lazyboot.overhead / 1024).toFixed(0)} KiB) | ${row.lazyboot.seconds.toFixed(1)} s `
      + `| ${(row.whole.bytes / row.lazyboot.bytes).toFixed(1)}× | ${row.whole.seconds.toFixed(1)} s | ${(row.whole.seconds / row.lazyboot.seconds).toFixed(2)}× `
      + `| ${mib(row.rsync.bytes)} MiB (${(row.rsync.bytes / row.lazyboot.bytes).toFixed(2)}×) | ${row.rsync.seconds.toFixed(1)} s | ${(row.rsync.seconds / row.lazyboot.seconds).toFixed(2)}× |`);
  }
  lines.push(
    '',
    `- Code measured: ${await measuredCommit()}.`,
    `- Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Node ${process.version}, ${await versionOf('rsync', ['--version'])}, ${await versionOf('qemu-io', ['--version'])}.`,
    `- Load average before ${loadBefore.map((l) => l.toFixed(1)).join(' ')}, at the end ${loadavg().map((l) => l.toFixed(1)).join(' ')} (the machine is shared with other helpers' QEMU guests: times move with it; bytes do not).`,
    '- lazyboot\'s time is the whole `lazyboot snapshot` process (Node start, map, hashing of the dirty blocks, offer, upload, commit);',
    '  rsync and the import read and checksum the whole disk (rsync: both copies), whatever the fraction.',
    '',
  );
  return lines.join('\n');
}

void main().catch((error: unknown) => {
  process.stderr.write(`bench-snapshot: ${(error as Error).stack ?? String(error)}\n`);
  process.exitCode = 1;
});
