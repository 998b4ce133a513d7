// The live pivot on the real Debian images: the guest moves from the COR device to QEMU's native
// graph (qcow2 metadata over the local raw disk, COR device as read-through backing) while it boots,
// keeps answering the guest agent, logs no I/O or filesystem error, and files written before and
// after the pivot stay intact, also across the next boot of the same disk (the map got QEMU's writes).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { ensureFixture } from '../fixtures/build.js';
import { launch, type LazyVm } from '../lib/launch.js';
import { importImage, qemuProcessesMentioning, scratchDir, serveRepository } from './boot-support.js';

const BOOT_TIMEOUT_MS = 300_000;
const CONSOLE_ERRORS = /I\/O error|EXT4-fs error|Buffer I\/O|blk_update_request|critical medium error|Remounting filesystem read-only/i;

/** Writes 2 MiB of random data to FILE in the guest and returns its sha256. */
async function writeRandomFile(vm: LazyVm, file: string): Promise<string> {
  const result = await vm.exec('/bin/sh', ['-c', `head -c 2097152 /dev/urandom > ${file} && sync && sha256sum ${file}`]);
  if (result.exitCode !== 0) throw new Error(`writing ${file} failed: ${result.stderr}`);
  return result.stdout.split(' ')[0]!;
}

async function sha256In(vm: LazyVm, file: string): Promise<string> {
  const result = await vm.exec('/bin/sh', ['-c', `echo 3 > /proc/sys/vm/drop_caches; sha256sum ${file}`]);
  return result.exitCode === 0 ? result.stdout.split(' ')[0]! : `missing: ${result.stderr}`;
}

async function pivotKeepsTheGuest(t: ExecutionContext, fixture: 'debian' | 'debian-plain', expectedSource: 'hook' | 'agent') {
  t.timeout(3 * BOOT_TIMEOUT_MS);
  const image = await ensureFixture(fixture);
  const scratch = await scratchDir(t);
  const served = await serveRepository(t, await importImage(scratch, image.path, 'img'));
  const disk = path.join(scratch, 'disk.raw');
  const common = { image: 'img', from: [served.uri], disk, agent: true, memoryMiB: 512, timeoutMs: BOOT_TIMEOUT_MS } as const;

  // Boot 1, transient: a file written before any pivot.
  let before: string;
  let after = '';
  {
    await using vm = await launch({ ...common, pivot: 'none' });
    await vm.ready;
    before = await writeRandomFile(vm, '/var/tmp/before-pivot');
  }

  // Boot 2, live pivot at storage-ready.
  const consoleLog = path.join(scratch, 'console.log');
  const lines: string[] = [];
  {
    await using vm = await launch({ ...common, pivot: 'live', consoleLog, log: (line) => lines.push(line) });
    const pivot = await vm.pivoted;
    t.truthy(pivot, `pivoted (failure: ${vm.failure?.message})`);
    t.is(vm.storageReadySource, expectedSource);
    t.log(`${fixture}: storage-ready from ${vm.storageReadySource}; guest paused ${pivot!.pauseMs.toFixed(1)} ms (drain ${pivot!.drainMs.toFixed(1)} ms); ${pivot!.presentBlocks} blocks present at the pivot`);
    t.true(pivot!.pauseMs > 0);
    await vm.ready; // the agent answers after the pivot
    const fetchedAtPivot = vm.stats().fetchedBytes;
    t.is(await sha256In(vm, '/var/tmp/before-pivot'), before, 'the file written before the pivot is intact');
    after = await writeRandomFile(vm, '/var/tmp/after-pivot');
    t.is(await sha256In(vm, '/var/tmp/after-pivot'), after);
    const ping = await vm.exec('/bin/true');
    t.is(ping.exitCode, 0, 'the guest still answers the agent');
    t.log(`fetched through the read-through device after the pivot: ${vm.stats().fetchedBytes - fetchedAtPivot} bytes`);
    t.is(vm.stats().modifiedBlocks > 0, true);
  }
  const consoleText = await readFile(consoleLog, 'utf8');
  t.notRegex(consoleText, CONSOLE_ERRORS, 'no I/O or filesystem errors on the console');
  t.true(lines.some((line) => /after the pivot: \d+ blocks made present \(streamed by QEMU, or zero blocks mapped to the disk\), \d+ written by the guest \(from the writes bitmap\)/.test(line)), lines.join('\n'));

  // Boot 3, transient again on the same disk: both files come back intact (the map knew QEMU's writes).
  {
    await using vm = await launch({ ...common, pivot: 'none' });
    await vm.ready;
    t.is(await sha256In(vm, '/var/tmp/before-pivot'), before);
    t.is(await sha256In(vm, '/var/tmp/after-pivot'), after);
  }
  t.deepEqual(await qemuProcessesMentioning(scratch), []);
}

test.serial('debian (hooks): live pivot at storage-ready from the initramfs; agent answers; files before and after intact; no console errors', (t) => pivotKeepsTheGuest(t, 'debian', 'hook'));
test.serial('debian-plain (no hooks): live pivot at storage-ready from the guest agent; the same holds', (t) => pivotKeepsTheGuest(t, 'debian-plain', 'agent'));
