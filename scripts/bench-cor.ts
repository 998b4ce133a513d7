// Benchmark of the copy-on-read device (not a test): prints a table and writes bench/results/cor.md.
//  (a) reading present blocks through the COR device vs the same raw file through qemu-nbd;
//  (b) a cold full read through the COR device from a repository (`lazyboot repo serve`) vs QEMU's
//      own copy-on-read chain (copy-on-read filter → qcow2 overlay → NBD backing from qemu-nbd),
//      with 0 ms and with 2 ms injected per request on the repository side (nbdkit delay filter);
//  (c) RSS of the COR process serving a 10 GiB sparse image.
// Every client is nbdcopy to `null:` with --no-extents (every byte is read, on both sides); for (b)
// three readers: a guest-like 1 × 4 and a booting guest's one 64 KiB request at a time (the goal's
// readers), and nbdcopy's default 4 × 64 requests (a bulk copy, reported without a goal).
// Server start-up is not timed.
import { repositoryRoot } from '../fixtures/build.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { Repository } from '../lib/repo/repository.js';
import { registerCleanup } from '../lib/base/cleanup.js';
import { measuredCommit } from './bench-freshness.js';
import { BENCH_BLOCK_SIZE, benchImageBytes, diskComplete, importBytes, serveDisk, timedCopy } from './bench-cold-read.js';
import { median, packFiles, processMemory, writeReport, runningServers, startServer, stopServer, warmPageCache, type ServerProcess } from './bench-kit.js';
import { tuneProcess } from '../lib/process-tuning.js';
import { installSignalTeardown } from '../lib/base/cleanup.js';

const ROOT = repositoryRoot();
const BIN = join(ROOT, 'bin', 'lazyboot.js');
const MIB = 1024 * 1024;
const BS = BENCH_BLOCK_SIZE;

interface Reader { readonly key: string; readonly label: string; readonly args: readonly string[]; readonly goal: boolean }

/**
 * The device serves a guest: a guest keeps a few requests in flight (QEMU's virtio queue under a
 * busy guest) and a booting guest mostly one at a time, sequentially (the kernel's readahead).
 * These two readers carry the goal. nbdcopy's default, 4 × 64 requests in flight, is a bulk copy:
 * reported, without a goal (see the notes in the report).
 */
const READERS: readonly Reader[] = [
  { key: 'b', label: 'guest-like reader (`nbdcopy --connections=1 --requests=4`)', args: ['--connections=1', '--requests=4'], goal: true },
  { key: 'b2', label: 'boot-like reader, one 64 KiB request at a time (`--connections=1 --requests=1 --request-size=65536`)', args: ['--connections=1', '--requests=1', '--request-size=65536'], goal: true },
  { key: 'b3', label: 'bulk copy, nbdcopy default (4 connections × 64 requests)', args: [], goal: false },
];

function mibps(bytes: number, ms: number): string {
  return ((bytes / MIB) / (ms / 1000)).toFixed(0);
}

/**
 * The bench image (cold-read.ts: 1 block in 4 zero, the rest random) into the repository, and as a
 * raw file sparse like the output of `qemu-img convert`: QEMU may answer its holes as holes, as the
 * repository does its zero blocks.
 */
async function importImage(repoDir: string, rawPath: string, name: string, size: number): Promise<void> {
  const content = benchImageBytes(size);
  await writeFile(rawPath, content);
  await execa('fallocate', ['--dig-holes', rawPath]);
  await importBytes(repoDir, name, content);
}

/** 10 GiB, all zeros except one random block per 64 MiB. */
async function importSparseImage(repoDir: string, name: string, size: number): Promise<void> {
  const repo = await Repository.open(repoDir);
  const zeros = Buffer.alloc(4 * MIB);
  async function* chunks() {
    for (let at = 0; at < size; at += zeros.length) {
      if (at % (64 * MIB) === 0) {
        const chunk = Buffer.alloc(zeros.length);
        randomBytes(BS).copy(chunk);
        yield chunk;
      } else yield zeros;
    }
  }
  await repo.importImage(name, chunks(), { size, blockSize: BS });
  await repo.close();
}

/** `--serve-raw FILE SOCKET`: the raw file through lazyboot's NBD server without the COR layer. */
async function serveRaw(file: string, socketPath: string): Promise<void> {
  const { startNbdServer } = await import('../lib/nbd/server.js');
  const { LocalDisk } = await import('../lib/cor/local-disk.js');
  const { stat } = await import('node:fs/promises');
  const disk = await LocalDisk.openOrCreate(file, (await stat(file)).size);
  await startNbdServer({ socketPath, exports: { async list() { return [{ name: '' }]; }, async open() { return disk; } } });
}

interface ColdResult { readonly cor: number[]; readonly qemu: number[]; readonly corPeakRss: number[] }

/**
 * Cold full reads of `image`, alternating: through a fresh COR device (from `repoUri`) and through
 * QEMU's chain (copy-on-read filter → fresh qcow2 overlay → `backingUri`). Every run starts empty,
 * on a warm source: `repoFiles` and `backingFiles` (what the repository server and QEMU's backing
 * read) are warmed before each run (bench-kit.ts warmPageCache), so the chains are compared, not a disk.
 */
async function coldComparison(o: { dir: string; image: string; size: number; repoUri: string; backingUri: string; repoFiles: readonly string[]; backingFiles: readonly string[]; reader: Reader; runs: number; tag: string }): Promise<ColdResult> {
  const result: ColdResult = { cor: [], qemu: [], corPeakRss: [] };
  for (let i = 0; i < o.runs; i++) {
    const name = `${o.tag}-${o.reader.key}-${i}`;
    const coldDisk = join(o.dir, `cold-${name}.raw`);
    const sock = join(o.dir, `cold-${name}.sock`);
    const device = await serveDisk(o.image, coldDisk, o.repoUri, sock);
    await warmPageCache(o.repoFiles);
    result.cor.push(await timedCopy(`nbd+unix:///disk?socket=${sock}`, o.reader.args));
    result.corPeakRss.push((await processMemory(device.pid)).peak);
    await stopServer(device);
    if (i === 0 && !(await diskComplete(coldDisk))) throw new Error('the cold read did not make every block present');
    await rm(coldDisk, { force: true });
    await rm(`${coldDisk}.map`, { force: true });

    const overlay = join(o.dir, `overlay-${name}.qcow2`);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', o.backingUri, overlay, String(o.size)]);
    const chainSock = join(o.dir, `chain-${name}.sock`);
    const chain = await startServer('qemu-nbd', ['-t', '--image-opts', '--shared=16', '-k', chainSock,
      `driver=copy-on-read,file.driver=qcow2,file.file.driver=file,file.file.filename=${overlay}`], chainSock);
    await warmPageCache(o.backingFiles);
    result.qemu.push(await timedCopy(`nbd+unix:///?socket=${chainSock}`, o.reader.args));
    await stopServer(chain);
    await rm(overlay, { force: true });
  }
  return result;
}

function coldRow(result: ColdResult, reader: Reader, sizeLabel: string, bytes: number, delayMs: number, note: (line: string) => void, proxyOnly = false): string {
  const cor = median(result.cor);
  const qemu = median(result.qemu);
  const ratio = qemu / cor;
  const bestRatio = Math.min(...result.qemu) / Math.min(...result.cor);
  note(`(${reader.key}) cold read of ${sizeLabel}, ${reader.label}, ${delayMs} ms/request: COR ${cor.toFixed(0)} ms, QEMU chain ${qemu.toFixed(0)} ms, throughput ratio ${ratio.toFixed(2)}x (runs: COR ${result.cor.map((v) => v.toFixed(0)).join(' ')}; QEMU ${result.qemu.map((v) => v.toFixed(0)).join(' ')})`);
  const peak = (Math.max(...result.corPeakRss) / MIB).toFixed(0);
  const how = proxyOnly ? '0 ms per repository request through the delay proxy (rdelay=0ms)' : `${delayMs} ms per repository request`;
  const goal = proxyOnly ? '(where the time goes: the proxy without its delay)' : !reader.goal ? '— (bulk copy: see notes)' : delayMs ? '≥ 3×' : '≥ 1.0×';
  return `| (${reader.key}) cold read of ${sizeLabel}, ${how}, ${reader.label} | ${cor.toFixed(0)} ms (${mibps(bytes, cor)} MiB/s; peak RSS ${peak} MiB) | QEMU copy-on-read → qcow2 → NBD (qemu-nbd): ${qemu.toFixed(0)} ms (${mibps(bytes, qemu)} MiB/s) | throughput ratio **${ratio.toFixed(2)}×** (best/best ${bestRatio.toFixed(2)}×; ${result.cor.length} runs) | ${goal} |`;
}

async function main(): Promise<void> {
  // The raw server (--serve-raw) runs tuned like `lazyboot disk serve`, the device it is compared with.
  tuneProcess('disk-server');
  installSignalTeardown(); // Ctrl-C: the registered servers and temp dir are released (no longer implicit)
  if (process.argv[2] === '--serve-raw') return serveRaw(process.argv[3]!, process.argv[4]!);
  const args = await yargs(hideBin(process.argv))
    .option('size', { type: 'number', default: 256, describe: 'image size in MiB for (a) and (b)' })
    .option('runs', { type: 'number', default: 5, describe: 'runs per measurement (median reported)' })
    .option('big-size', { type: 'number', default: 1024, describe: 'size in MiB of a second, larger image for one cold-read row (0 = skip)' })
    .option('sparse-gib', { type: 'number', default: 10, describe: 'size of the sparse image for (c)' })
    .option('rss-only', { type: 'boolean', default: false, describe: 'run only (c) and print its row (the report is not written)' })
    .option('out', { type: 'string', default: join(ROOT, 'bench', 'results', 'cor.md') })
    .strict().help().parseAsync();
  const size = args.size * MIB;
  const loadavgAtStart = loadavg().map((l) => l.toFixed(1)).join(' ');
  const dir = await mkdtemp(join(tmpdir(), 'lazyboot-bench-cor-'));
  // Ctrl-C or SIGTERM mid-run: no server or temp dir is left behind.
  const unregister = registerCleanup({
    release: async () => {
      for (const child of runningServers) child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
    releaseSync: () => { for (const child of runningServers) child.kill('SIGKILL'); },
  });
  const rows: string[] = [];
  const note = (line: string) => { process.stdout.write(`${line}\n`); };
  try {
    const repoDir = join(dir, 'repo');
    const rawPath = join(dir, 'image.raw');
    note(`importing a ${args.size} MiB image (1 block in 4 zero) ...`);
    await importImage(repoDir, rawPath, 'bench', size);

    if (!args['rss-only']) {
      // ---- (a) present blocks: COR device vs qemu-nbd on the same raw file ----
      const disk = join(dir, 'disk.raw');
      await execa('node', [BIN, 'disk', 'fill', '--disk', disk, '--image', 'bench', '--from', repoDir]);
      const corSock = join(dir, 'cor.sock');
      const qnbdSock = join(dir, 'qemu-nbd.sock');
      const plainSock = join(dir, 'plain.sock');
      const cor = await serveDisk('bench', disk, repoDir, corSock);
      const qnbd = await startServer('qemu-nbd', ['-t', '-r', '-f', 'raw', '--shared=16', '-k', qnbdSock, disk], qnbdSock);
      const plain = await startServer('node', [fileURLToPath(import.meta.url), '--serve-raw', disk, plainSock], plainSock);
      await timedCopy(`nbd+unix:///disk?socket=${corSock}`); // warm the page cache
      const corTimes: number[] = [];
      const qnbdTimes: number[] = [];
      const plainTimes: number[] = [];
      for (let i = 0; i < args.runs; i++) { // interleaved, so a busy moment hits all
        await warmPageCache([disk]);
        corTimes.push(await timedCopy(`nbd+unix:///disk?socket=${corSock}`));
        await warmPageCache([disk]);
        qnbdTimes.push(await timedCopy(`nbd+unix:///?socket=${qnbdSock}`));
        await warmPageCache([disk]);
        plainTimes.push(await timedCopy(`nbd+unix:///?socket=${plainSock}`));
      }
      await stopServer(cor);
      await stopServer(qnbd);
      await stopServer(plain);
      const plainMs = median(plainTimes);
      const a = { cor: median(corTimes), qemu: median(qnbdTimes), corBest: Math.min(...corTimes), qemuBest: Math.min(...qnbdTimes) };
      note(`(a) present reads: COR ${a.cor.toFixed(0)} ms (best ${a.corBest.toFixed(0)}), qemu-nbd ${a.qemu.toFixed(0)} ms (best ${a.qemuBest.toFixed(0)}), ratio ${(a.cor / a.qemu).toFixed(2)}x`);
      rows.push(`| (a) read ${args.size} MiB of present blocks | ${a.cor.toFixed(0)} ms (${mibps(size, a.cor)} MiB/s; best ${a.corBest.toFixed(0)} ms) | qemu-nbd on the same raw file: ${a.qemu.toFixed(0)} ms (${mibps(size, a.qemu)} MiB/s; best ${a.qemuBest.toFixed(0)} ms) | time ratio **${(a.cor / a.qemu).toFixed(2)}×** (best/best ${(a.corBest / a.qemuBest).toFixed(2)}×) | ≤ 1.25× |`);
      note(`(a') same file through lazyboot's NBD server without the COR layer: ${plainMs.toFixed(0)} ms`);
      rows.push(`| (a') the same, COR layer vs no COR layer | ${a.cor.toFixed(0)} ms | the raw file through lazyboot's own NBD server (no COR layer): ${plainMs.toFixed(0)} ms (${mibps(size, plainMs)} MiB/s) | time ratio **${(a.cor / plainMs).toFixed(2)}×** | (where the time goes) |`);

      // ---- (b) cold full read: COR from `lazyboot repo serve` vs QEMU's COR chain over qemu-nbd ----
      const repoSock = join(dir, 'repo.sock');
      const repoServer = await startServer('node', [BIN, 'repo', 'serve', '--repo', repoDir, '--socket', repoSock], repoSock);
      const backingSock = join(dir, 'backing.sock');
      const backing = await startServer('qemu-nbd', ['-t', '-r', '-f', 'raw', '--shared=16', '-k', backingSock, rawPath], backingSock);
      // The 2 ms rows go through nbdkit's delay proxy, which costs CPU on these 2 cores too: the
      // guest-like reader is also measured through the proxy at 0 ms, so the report shows what the
      // delay itself costs each chain, apart from the proxy's copying.
      const passes = [
        { delayMs: 0, proxy: false, proxyOnly: false, readers: READERS },
        { delayMs: 0, proxy: true, proxyOnly: true, readers: [READERS[0]!] },
        { delayMs: 2, proxy: true, proxyOnly: false, readers: READERS },
      ];
      for (const { delayMs, proxy, proxyOnly, readers } of passes) {
        let repoUri = `nbd+unix:///?socket=${repoSock}`;
        let backingUri = `nbd+unix:///?socket=${backingSock}`;
        const proxies: ServerProcess[] = [];
        if (proxy) {
          const repoDelayed = join(dir, `repo-delay-${delayMs}.sock`);
          const backingDelayed = join(dir, `backing-delay-${delayMs}.sock`);
          proxies.push(await startServer('nbdkit', ['-f', '-U', repoDelayed, '--filter=delay', 'nbd', `socket=${repoSock}`, 'dynamic-export=true', `rdelay=${delayMs}ms`], repoDelayed));
          proxies.push(await startServer('nbdkit', ['-f', '-U', backingDelayed, '--filter=delay', 'nbd', `socket=${backingSock}`, `rdelay=${delayMs}ms`], backingDelayed));
          repoUri = `nbd+unix:///?socket=${repoDelayed}`;
          backingUri = `nbd+unix:///?socket=${backingDelayed}`;
        }
        for (const reader of readers) {
          // One request at a time through QEMU's chain with the delay takes ~15 s a run: fewer runs.
          const runs = reader.args.includes('--requests=1') ? Math.min(args.runs, 3) : args.runs;
          const result = await coldComparison({ dir, image: 'bench', size, repoUri, backingUri, repoFiles: await packFiles(repoDir), backingFiles: [rawPath], reader, runs, tag: `${delayMs}${proxy ? 'p' : ''}` });
          rows.push(coldRow(result, reader, `${args.size} MiB`, size, delayMs, note, proxyOnly));
        }
        for (const proxy of proxies) await stopServer(proxy);
      }
      await stopServer(backing);
      if (args['big-size'] > 0) {
        // The same image shape, 4× larger or more: start-up costs (a fresh process warming up its
        // JIT, connections) weigh less, and both sides write more to the page cache.
        const bigSize = args['big-size'] * MIB;
        const bigRaw = join(dir, 'big.raw');
        note(`importing a ${args['big-size']} MiB image ...`);
        await importImage(repoDir, bigRaw, 'big', bigSize);
        const bigSock = join(dir, 'big-backing.sock');
        const bigBacking = await startServer('qemu-nbd', ['-t', '-r', '-f', 'raw', '--shared=16', '-k', bigSock, bigRaw], bigSock);
        for (const reader of [READERS[0]!, READERS[2]!]) {
          const result = await coldComparison({ dir, image: 'big', size: bigSize, repoUri: `nbd+unix:///?socket=${repoSock}`, backingUri: `nbd+unix:///?socket=${bigSock}`, repoFiles: await packFiles(repoDir), backingFiles: [bigRaw], reader, runs: Math.min(args.runs, 3), tag: `big-${reader.key}` });
          rows.push(coldRow(result, reader, `${args['big-size']} MiB`, bigSize, 0, note));
        }
        await stopServer(bigBacking);
        await rm(bigRaw, { force: true });
      }
      {
        const times: number[] = [];
        for (let i = 0; i < args.runs; i++) {
          const coldDisk = join(dir, `cold-dir-${i}.raw`);
          const sock = join(dir, `cold-dir-${i}.sock`);
          const device = await serveDisk('bench', coldDisk, repoDir, sock);
          times.push(await timedCopy(`nbd+unix:///disk?socket=${sock}`, READERS[0]!.args));
          await stopServer(device);
          await rm(coldDisk, { force: true });
          await rm(`${coldDisk}.map`, { force: true });
        }
        const ms = median(times);
        note(`(b') cold read from the repository directory in-process: ${ms.toFixed(0)} ms (${mibps(size, ms)} MiB/s)`);
        rows.push(`| (b') cold read of ${args.size} MiB, guest-like reader, repository directory opened in-process (no repository server) | ${ms.toFixed(0)} ms (${mibps(size, ms)} MiB/s) | — | — | (where the time goes) |`);
      }
      await stopServer(repoServer);
    }

    // ---- (c) RSS serving a 10 GiB sparse image (fill the whole disk, then read 1 GiB) ----
    const sparseSize = args['sparse-gib'] * 1024 * MIB;
    note(`importing a ${args['sparse-gib']} GiB sparse image ...`);
    const baselineChild = execa('node', ['-e', 'setTimeout(() => {}, 1000)']);
    await sleep(500);
    const baseline = (await processMemory(baselineChild.pid!)).rss;
    await baselineChild;
    await importSparseImage(repoDir, 'sparse', sparseSize);
    const sparseDisk = join(dir, 'sparse.raw');
    const sparseSock = join(dir, 'sparse.sock');
    const device = await serveDisk('sparse', sparseDisk, repoDir, sparseSock);
    const uri = `nbd+unix:///disk?socket=${sparseSock}`;
    const idle = await processMemory(device.pid);
    // Fill through the device's own engine (disk fill is a separate process), so: a QEMU-like
    // read (1 connection, 16 requests in flight), then nbdcopy's default (4 connections × 64).
    const started = Date.now();
    await execa('nbdcopy', ['--no-extents', '--connections=1', '--requests=16', uri, 'null:']);
    const readMs = Date.now() - started;
    const afterQemuLike = await processMemory(device.pid);
    await execa('nbdcopy', ['--no-extents', uri, 'null:']);
    const afterDefault = await processMemory(device.pid);
    await stopServer(device);
    const mib = (bytes: number) => (bytes / MIB).toFixed(0);
    note(`(c) RSS serving ${args['sparse-gib']} GiB: ${mib(idle.rss)} MiB after open, peak ${mib(afterQemuLike.peak)} MiB during a full cold read with 16 requests in flight (${readMs} ms), peak ${mib(afterDefault.peak)} MiB with nbdcopy's default 4×64`);
    rows.push(`| (c) RSS of the COR process, ${args['sparse-gib']} GiB sparse image | ${mib(idle.rss)} MiB after open; peak ${mib(afterQemuLike.peak)} MiB over a full cold read, 1 connection × 16 requests (${(readMs / 1000).toFixed(1)} s); peak ${mib(afterDefault.peak)} MiB with nbdcopy's 4 × 64 requests in flight | \`node -e 0\` on this machine: ${mib(baseline)} MiB | — | ≤ 80 MiB |`);

    if (args['rss-only']) {
      note(rows.join('\n'));
      return;
    }
    const report = [
      '# Copy-on-read device benchmark',
      '',
      `Code measured: ${await measuredCommit()}.`,
      '',
      `Written by \`scripts/bench-cor\` on ${new Date().toISOString()} (${cpus().length} CPUs, ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}; load average ${loadavgAtStart} at start, ${loadavg().map((l) => l.toFixed(1)).join(' ')} at the end: the machine is shared, so compare within a row, not across runs).`,
      `Client: \`nbdcopy --no-extents URI null:\` (every byte is read on both sides); readers in (b): a guest-like 1 × 4 and a boot-like one 64 KiB request at a time (the goal's readers: what a guest presents to the device), and nbdcopy's default 4 connections × 64 requests (a bulk copy, no goal). Median of ${args.runs} runs (3 for the boot-like reader and the large image), alternating with the baseline (best/best ratio in parentheses); images in 64 KiB blocks, one block in four zero (QEMU's backing raw file is sparse, as \`qemu-img convert\` writes it); server start-up not timed; the files each side reads are in the page cache at the start of every run (warmed outside the timing).`,
      'The 2 ms delay is `nbdkit --filter=delay nbd rdelay=2ms` in front of the repository (`lazyboot repo serve`) or the backing (`qemu-nbd`).',
      '',
      '| measurement | lazyboot COR device | baseline | ratio | goal |',
      '| --- | --- | --- | --- | --- |',
      ...rows,
      '',
      'How to read it: (a\') serves the same file through the same NBD server without the COR layer, so',
      'the COR layer\'s own cost is (a)/(a\'); the rest of the gap to qemu-nbd is the Node.js NBD server.',
      '(b\') opens the repository in-process instead of through `lazyboot repo serve`, which shows the',
      'cost of the repository hop. In (b) every fetched block is verified (SHA-256), written to the',
      'local disk and then served; QEMU\'s chain does not verify. Runs of 4 or more blocks are read',
      'from the repository and verified in a worker thread (`lib/fetch/fetch-worker.ts`), beside the',
      'event loop that serves the guest. Everything runs on the same 2 cores (client, COR device,',
      'repository server), so a cold read is bound by the CPU time of the whole pipeline: hashing',
      'alone is ~0.6 ms per MiB here. Zero blocks travel as NBD holes on both sides. The fewer',
      'requests a reader keeps in flight, the more the delay costs QEMU\'s chain (one round trip per',
      'request) and the more the COR device\'s design pays: queued adjacent absent runs merge into',
      'fetches of up to 4 MiB (8 in flight), and a sequential reader is fetched ahead of, within the',
      'budget of lib/cor/fetch-ahead.ts (up to an 8 MiB window; what is fetched ahead is stored like any',
      'fetched block, never fetched twice). The row through the delay proxy at 0 ms separates the cost',
      'of the proxy (nbdkit copying every byte, on the same 2 cores) from that of the delay: compare it',
      'with the 2 ms row of the same reader, for each chain.',
      'Why the bulk copy (b3) has no goal: with 256 requests in flight, QEMU\'s chain hides the 2 ms',
      'delay as well as the COR device does, so no design can be 3× faster there; and at 0 ms both',
      'chains are CPU-bound on the 2 cores. Measured per cold 256 MiB (CPU of each process during the',
      'read): with the guest-like reader the COR device spends ~0.44 s (event loop and fetch worker in',
      'parallel) and the repository server ~0.09 s, against ~0.30 s + ~0.26 s for QEMU\'s copy-on-read',
      'process and its qemu-nbd backing; with the bulk copy ~0.54 s + ~0.18 s against ~0.24 s + ~0.23 s.',
      'There the device hashes every block (~0.15 s), and the reader\'s 256 KiB requests, split around',
      'the zero blocks answered as holes, often find a free fetch slot and go upstream unmerged (one',
      'run measured ~140 fetches of 1-2 blocks among ~250): more requests on both sides of the hop.',
      '(c) reads every byte of a 10 GiB image that is almost all zero blocks: those are answered as',
      'NBD holes (no fetch, no disk read), so (c) shows the fixed memory of a device serving a large',
      'image; the peak RSS in the (b) rows is the data path\'s (dense 256 MiB image, every block fetched,',
      'verified and written).',
      '',
    ].join('\n');
    await writeReport(args.out, report);
    note(`\n${report}\nwritten to ${args.out}`);
  } finally {
    for (const child of runningServers) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    unregister();
  }
}

main().catch((error) => {
  process.stderr.write(`bench-cor: ${(error as Error).stack ?? error}\n`);
  process.exitCode = 1;
});
