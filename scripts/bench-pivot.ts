// Pivot benchmark (scripts/bench-pivot → bench/results/pivot.md), all in one run, side by side:
//   pause:  the guest pause of the live pivot (`lazyboot pivot` on a VM booted with pivot none);
//   fill:   one image from one `repo serve` socket onto an empty local disk three ways — QEMU's
//           block-stream after the pivot (what lazyboot does), the COR device's own fill (what
//           it did before), `qemu-img convert` of the repository's NBD export (a plain copy);
//   guest I/O: dd of a large file inside the guest (write with oflag=direct, read with
//           iflag=direct) on the COR device before the pivot, on QEMU's native graph after it
//           (fill complete), and in the same guest booted by QEMU on a plain local raw copy.
// Goals (issue 14): after the pivot ≥ 0.95× the plain local disk; pause < 100 ms.
// The dd rows need the guest agent: the default image is `debian`; `--image tiny` (no agent) runs
// the pause and fill rows only, as a quick check.
import { copyFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { launch, type LazyVm } from '../lib/launch.js';
import { openCorDevice } from '../lib/cor/device.js';
import { TransientVm } from '../vmm/vm.js';
import { tinyStayUpArgs } from '../guest/qemu-args.js';
import { median, runningServers, startServer, stopServer, versionOf, writeReport, type ServerProcess } from './bench-kit.js';
import { measuredCommit } from './bench-freshness.js';

/** The CLI, wherever the bench is run from. */
const BIN = new URL('../../bin/lazyboot.js', import.meta.url).pathname;
const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 && args[at + 1] ? args[at + 1]! : fallback;
};
const IMAGE = option('image', 'debian') as 'debian' | 'tiny';
const DD_MIB = Number(option('mib', '256'));
const MEMORY_MIB = IMAGE === 'debian' ? 1024 : 256;
const BOOT_TIMEOUT_MS = 900_000;
const mibps = (bytes: number, seconds: number) => (bytes / 2 ** 20 / seconds).toFixed(1);

interface DdResult { readonly writeMiBps: number; readonly readMiBps: number }

/** dd in the guest through the agent: a new file written (direct I/O, fsync), then read back (direct I/O). */
async function guestDdOnce(exec: LazyVm['exec'], file: string): Promise<DdResult> {
  const rate = (output: string) => {
    // "268435456 bytes (268 MB, 256 MiB) copied, 2.5 s, 107 MB/s"
    const match = /(\d+) bytes .* copied, ([\d.]+) s/.exec(output);
    if (!match) throw new Error(`dd said: ${output}`);
    return Number(match[1]) / 2 ** 20 / Number(match[2]);
  };
  const write = await exec('/bin/sh', ['-c', `dd if=/dev/zero of=${file} bs=1M count=${DD_MIB} oflag=direct conv=fsync 2>&1`], { timeoutMs: 600_000 });
  const read = await exec('/bin/sh', ['-c', `dd if=${file} of=/dev/null bs=1M iflag=direct 2>&1; rm -f ${file}`], { timeoutMs: 600_000 });
  return { writeMiBps: rate(write.stdout + write.stderr), readMiBps: rate(read.stdout + read.stderr) };
}

/** How many dd rounds per disk; the median is reported (single runs swing with the machine's load). */
const DD_ROUNDS = 3;

async function guestDd(exec: LazyVm['exec'], file: string): Promise<DdResult> {
  const rounds: DdResult[] = [];
  for (let round = 0; round < DD_ROUNDS; round++) rounds.push(await guestDdOnce(exec, `${file}-${round}`));
  return { writeMiBps: median(rounds.map((r) => r.writeMiBps)), readMiBps: median(rounds.map((r) => r.readMiBps)) };
}

async function main(): Promise<void> {
  const loadBefore = loadavg();
  const fixture = await ensureFixture(IMAGE);
  const work = await mkdtemp(join(tmpdir(), 'bench-pivot-'));
  let server: ServerProcess | undefined;
  try {
    const repo = join(work, 'repo');
    await execa('node', [BIN, 'image', 'import', fixture.path, IMAGE, '--repo', repo]);
    const socket = join(work, 'serve.sock');
    server = await startServer('node', [BIN, 'repo', 'serve', '--repo', repo, '--socket', socket], socket);
    const from = [`nbd+unix:///?socket=${socket}`];
    const imageBytes = (await stat(fixture.path)).size;

    // Each timed row starts with no dirty pages of an earlier step to write back (the import's
    // 1 GiB of packs): the COR fill writes through the page cache, where writeback of older pages
    // can throttle it. (This did not explain its spread: the same code took 0.5-2.9 s across runs
    // on this machine, with and without the sync.)
    await execa('sync');
    // Fill (c): qemu-img convert of the repository's export onto an empty raw file.
    process.stderr.write('bench-pivot: qemu-img convert\n');
    let started = performance.now();
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', '-t', 'none', `nbd+unix:///${IMAGE}@1?socket=${socket}`, join(work, 'convert.raw')]);
    const convertSeconds = (performance.now() - started) / 1000;

    // Fill (b): the COR device's own fill of an empty disk (no guest).
    await execa('sync');
    process.stderr.write('bench-pivot: COR device fill\n');
    started = performance.now();
    const device = await openCorDevice({ image: IMAGE, disk: join(work, 'cor-fill.raw'), from, fill: true, trace: false });
    await device.filled;
    const corFillSeconds = (performance.now() - started) / 1000;
    await device.close();

    // The lazyboot VM: boot with pivot none, dd on the COR device, pivot (pause), fill (a), dd on native.
    process.stderr.write(`bench-pivot: lazyboot boot of ${IMAGE} (pivot none, then pivot)\n`);
    const hasAgent = IMAGE === 'debian';
    const vm = await launch({
      image: IMAGE, from, disk: join(work, 'lazy.raw'), memoryMiB: MEMORY_MIB, timeoutMs: BOOT_TIMEOUT_MS, trace: false,
      pivot: 'none', agent: hasAgent ? true : 'optional', ...(hasAgent ? {} : { qemuArgs: tinyStayUpArgs() }),
    });
    let before: DdResult | undefined;
    let after: DdResult | undefined;
    let pauseMs: number;
    let streamSeconds: number;
    let streamBytes: number;
    try {
      await vm.ready;
      if (hasAgent) before = await guestDd((...a) => vm.exec(...a), '/var/tmp/bench-before');
      const fillStart = performance.now();
      const pivot = await vm.pivot({ fill: true, fillRate: 0 });
      pauseMs = pivot.pauseMs;
      await new Promise<void>((resolve, reject) => {
        const check = () => {
          const fill = vm.status().fill;
          if (fill === 'complete') resolve();
          else if (fill === 'failed' || vm.state === 'failed') reject(new Error(`fill ${fill}: ${vm.failure?.message ?? ''}`));
          else setTimeout(check, 100);
        };
        check();
      });
      streamSeconds = (performance.now() - fillStart) / 1000;
      const blockSize = imageBytes / vm.stats().totalBlocks;
      // What the stream had to copy: the clusters the pivot did not map to the local disk.
      streamBytes = (vm.stats().totalBlocks - pivot.presentBlocks) * blockSize;
      if (hasAgent) after = await guestDd((...a) => vm.exec(...a), '/var/tmp/bench-after');
    } finally {
      await vm.close();
    }

    // The same guest on a plain local raw copy of the image, QEMU alone (no lazyboot in the data path).
    let plain: DdResult | undefined;
    if (hasAgent) {
      process.stderr.write('bench-pivot: plain local raw disk\n');
      const copy = join(work, 'plain.raw');
      await copyFile(fixture.path, copy);
      const plainVm = await TransientVm.start({ disk: { spec: { kind: 'file', path: copy, format: 'raw' }, close: async () => {} }, memoryMiB: MEMORY_MIB, timeoutMs: BOOT_TIMEOUT_MS, agent: true });
      try {
        await plainVm.ready;
        plain = await guestDd((...a) => plainVm.exec(...a), '/var/tmp/bench-plain');
      } finally {
        await plainVm.close();
      }
    }

    const row = (name: string, result: DdResult | undefined) =>
      result && plain
        ? `| ${name} | ${result.writeMiBps.toFixed(1)} | ${(result.writeMiBps / plain.writeMiBps).toFixed(2)}× | ${result.readMiBps.toFixed(1)} | ${(result.readMiBps / plain.readMiBps).toFixed(2)}× |`
        : `| ${name} | n/a | | n/a | |`;
    const lines = [
      '# Pivot: guest pause, fill throughput, guest disk throughput before and after the pivot',
      '',
      `Image \`${IMAGE}\` (${(imageBytes / 2 ** 20).toFixed(0)} MiB raw, 64 KiB blocks) served by \`lazyboot repo serve\` on a unix socket; ${MEMORY_MIB} MiB guest, TCG. One run, side by side.`,
      '',
      '## Live pivot',
      '',
      `Guest pause (stop → drain the COR device → native graph → qom-set → cont), after boot: **${pauseMs.toFixed(1)} ms** (goal < 100 ms: ${pauseMs < 100 ? 'met' : 'not met'}).`,
      '',
      '## Fill throughput (unlimited rate, same repository socket)',
      '',
      '| fill | bytes | time | MiB/s | ratio to qemu-img convert |',
      '| --- | --- | --- | --- | --- |',
      `| qemu-img convert of the NBD export (whole image) | ${(imageBytes / 2 ** 20).toFixed(0)} MiB | ${convertSeconds.toFixed(2)} s | ${mibps(imageBytes, convertSeconds)} | 1.00× |`,
      `| COR device's own fill, empty disk (whole image) | ${(imageBytes / 2 ** 20).toFixed(0)} MiB | ${corFillSeconds.toFixed(2)} s | ${mibps(imageBytes, corFillSeconds)} | ${(convertSeconds / corFillSeconds).toFixed(2)}× |`,
      `| QEMU block-stream after the pivot (the data blocks the boot left absent) | ${(streamBytes / 2 ** 20).toFixed(0)} MiB | ${streamSeconds.toFixed(2)} s | ${mibps(streamBytes, streamSeconds)} | ${(Number(mibps(streamBytes, streamSeconds)) / Number(mibps(imageBytes, convertSeconds))).toFixed(2)}× (by rate) |`,
      '',
      'The block-stream row starts after the boot (what the guest read is present; zero blocks are mapped to the local disk at the pivot and not streamed) and its time includes the pivot and the removal of the NBD node; zero blocks count as bytes in the other rows.',
      '',
      `## Guest disk throughput (dd of ${DD_MIB} MiB inside the guest: write oflag=direct conv=fsync, read iflag=direct; median of ${DD_ROUNDS})`,
      '',
      '| disk | write MiB/s | ratio to plain | read MiB/s | ratio to plain |',
      '| --- | --- | --- | --- | --- |',
      row('plain local raw disk (QEMU only)', plain),
      row('lazyboot before the pivot (COR device over NBD)', before),
      row('lazyboot after the pivot (QEMU native graph, fill complete)', after),
      '',
      after && plain ? `Goal after the pivot ≥ 0.95× plain: write ${after.writeMiBps / plain.writeMiBps >= 0.95 ? 'met' : 'not met'}, read ${after.readMiBps / plain.readMiBps >= 0.95 ? 'met' : 'not met'}.` : 'Guest dd rows need the guest agent: run with the default `--image debian`.',
      '',
      `- Code measured: ${await measuredCommit()}.`,
      `- Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Node ${process.version}, ${await versionOf('qemu-img', ['--version'])}.`,
      `- Load average before ${loadBefore.map((l) => l.toFixed(1)).join(' ')}, at the end ${loadavg().map((l) => l.toFixed(1)).join(' ')} (shared machine: times move with the load).`,
      '',
    ];
    await writeReport('bench/results/pivot.md', lines.join('\n'));
    process.stdout.write(lines.join('\n'));
  } finally {
    await stopServer(server);
    for (const child of runningServers) child.kill('SIGKILL');
    await rm(work, { recursive: true, force: true });
  }
}

void main().catch((error: unknown) => {
  process.stderr.write(`bench-pivot: ${(error as Error).stack ?? String(error)}\n`);
  process.exitCode = 1;
});
