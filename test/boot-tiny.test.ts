// The tiny image booted lazily: QEMU on the COR disk, blocks fetched from a repository that a
// separate `lazyboot repo serve` process serves over NBD; the error cases; `await using`.
// (Ctrl-C: boot-signals.test.ts.)
import { existsSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { tinyStayUpArgs } from '../guest/qemu-args.js';
import { GuestDiskError, QemuExited } from '../vmm/errors.js';
import { chooseAccelerator } from '../vmm/accel.js';
import { CLI, importImage, leftovers, processAlive, qemuProcessesMentioning, scratchDir, serveRepository } from './boot-support.js';

const TEST_TIMEOUT_MS = 120_000;

async function tinyRepository(t: import('ava').ExecutionContext) {
  const tiny = await ensureFixture('tiny');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, tiny.path, 'tiny');
  return { tiny, scratch, repoDir };
}

test('tiny boots through the COR disk from `lazyboot repo serve`: storage-ready, a fraction fetched, guest writes in the map, nothing left', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const { tiny, scratch, repoDir } = await tinyRepository(t);
  const served = await serveRepository(t, repoDir);
  const diskPath = path.join(scratch, 'vm.raw');
  const vm = await launch({ image: 'tiny', disk: diskPath, from: [served.uri], accel: 'auto', memoryMiB: 256, timeoutMs: 90_000 });
  t.teardown(() => vm.close());
  await vm.storageReady;
  t.is(vm.storageReadySource, 'hook', 'the tiny image carries the lazyboot hooks');
  const atStorageReady = vm.stats();
  t.log(`storage-ready: fetched ${atStorageReady.fetchedBytes} bytes (${atStorageReady.fetchedBlocks} blocks) of a ${tiny.sizeBytes}-byte image (${tiny.allocatedBytes} allocated)`);
  t.true(atStorageReady.fetchedBytes > 0);
  t.true(atStorageReady.fetchedBytes < tiny.sizeBytes / 2, 'the boot fetched far less than the image');
  await vm.ready; // boot-complete
  await vm.closed; // the tiny guest powers off by itself
  t.is(vm.state, 'stopped');
  const final = vm.stats();
  t.true(final.modifiedBlocks > 0, 'the guest wrote its boot counter: W bits set');
  t.is(final.failedFetches, 0);
  const qemuPid = vm.events.history.find((e) => e.type === 'qemu-up');
  t.false(processAlive(qemuPid?.type === 'qemu-up' ? qemuPid.pid : undefined));
  t.true(existsSync(diskPath) && existsSync(`${diskPath}.map`), 'an explicit --disk stays');
  t.deepEqual(await qemuProcessesMentioning(diskPath), []);
  // The next boot of the same disk reads what is already local: nothing more to fetch for it.
  const again = await launch({ image: 'tiny', disk: diskPath, from: [served.uri], accel: 'tcg', memoryMiB: 256, timeoutMs: 90_000 });
  t.teardown(() => again.close());
  await again.closed;
  t.is(again.state, 'stopped');
  t.is(again.stats().fetchedBytes, 0);
});

test('`lazyboot boot tiny` prints milestones and a summary, exits 0, deletes its temp disk', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const { scratch, repoDir } = await tinyRepository(t);
  const served = await serveRepository(t, repoDir);
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const result = await execa('node', [CLI, 'boot', 'tiny', '--from', served.uri, '--memory', '256M', '--timeout', '90s'], { env: { TMPDIR: tmp }, reject: false });
  t.log(result.stderr);
  t.log(result.stdout);
  t.is(result.exitCode, 0);
  // The CLI decides as this process does (the same probe on the same machine): TCG here, KVM elsewhere.
  const expected = await chooseAccelerator('auto');
  t.true(result.stderr.includes(`accelerator: ${expected.reason}`), `expected "${expected.reason}"`);
  t.regex(result.stderr, /QEMU up \(pid \d+\)/);
  t.regex(result.stderr, /storage-ready at [\d.]+ s: virtio_blk has \/dev\/vda .*said by the image's lazyboot hook.*fetched/);
  t.regex(result.stdout, /storage-ready: [\d.]+ s \(from the image's hook\)/);
  t.regex(result.stdout, /summary: tiny@1 stopped/);
  // The tiny boot reads ~20 MiB of its image: what it needed is reported beside what was fetched.
  t.regex(result.stdout, /the guest needed \d+(\.\d+)? MiB; fetched ahead [\d.]+ [KMG]?i?B, of it read [\d.]+ [KMG]?i?B/);
  t.regex(result.stdout, /temporary disk: deleted/);
  t.deepEqual(await leftovers(tmp), []);
});

test('errors are one line, exit 1, nothing left: unknown image, unreachable repository, missing QEMU', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const { scratch, repoDir } = await tinyRepository(t);
  const served = await serveRepository(t, repoDir);
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const boot = (args: string[], env: Record<string, string> = {}) =>
    execa('node', [CLI, 'boot', ...args, '--timeout', '60s'], { env: { TMPDIR: tmp, ...env }, reject: false });
  const cases = {
    'unknown image': await boot(['no-such-image', '--from', served.uri]),
    'repository unreachable': await boot(['tiny', '--from', `nbd+unix:///?socket=${path.join(scratch, 'nobody.sock')}`]),
    'QEMU missing': await boot(['tiny', '--from', served.uri], { LAZYBOOT_QEMU: '/nonexistent/qemu-system-x86_64' }),
  };
  for (const [name, result] of Object.entries(cases)) {
    t.log(`${name}: ${result.stderr}`);
    t.is(result.exitCode, 1, name);
    const errorLines = result.stderr.split('\n').filter((line) => line.startsWith('lazyboot: ') && !line.startsWith('lazyboot: accelerator') && !/^lazyboot: (connection|fetch|repository)/.test(line));
    t.is(errorLines.length, 1, `${name}: one error line`);
  }
  t.regex(cases['unknown image'].stderr, /no-such-image/);
  t.regex(cases['QEMU missing'].stderr, /QEMU binary not found/);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});

test('QEMU killed mid-boot and the repository dying mid-boot both fail fast with a typed error and tear down', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const { repoDir } = await tinyRepository(t);
  const served = await serveRepository(t, repoDir);

  const killed = await launch({ image: 'tiny', from: [served.uri], accel: 'tcg', memoryMiB: 256, timeoutMs: 60_000 });
  t.teardown(() => killed.close());
  const up = killed.events.history.find((e) => e.type === 'qemu-up');
  process.kill(up?.type === 'qemu-up' ? up.pid! : 0, 'SIGKILL');
  await t.throwsAsync(killed.ready, { instanceOf: QemuExited });
  await killed.closed;
  t.is(killed.state, 'failed');
  t.false(existsSync(path.dirname(killed.diskPath)), 'temp disk removed');

  const orphaned = await launch({ image: 'tiny', from: [served.uri], accel: 'tcg', memoryMiB: 256, timeoutMs: 60_000 });
  t.teardown(() => orphaned.close());
  await served.stop(); // the repository dies before the firmware has read the boot sector
  const started = Date.now();
  const error = await t.throwsAsync(orphaned.ready);
  t.log(`${error?.constructor.name}: ${error?.message} after ${Date.now() - started} ms`);
  // A hang would end in BootTimeout (timeoutMs above); these two are the repository's death seen
  // by the guest, so the outcome shows it failed fast without a wall-clock window.
  t.true(error instanceof GuestDiskError || error instanceof QemuExited, 'a disk error or a failed boot, not a hang');
  await orphaned.closed;
  t.deepEqual(await qemuProcessesMentioning(orphaned.diskPath), []);
});

test('launch() works with `await using`: leaving the block tears a running VM down', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const { repoDir } = await tinyRepository(t);
  let diskPath = '';
  let qemuPid: number | undefined;
  {
    await using vm = await launch({ image: 'tiny', from: [repoDir], accel: 'tcg', memoryMiB: 256, qemuArgs: tinyStayUpArgs(), timeoutMs: 90_000 });
    diskPath = vm.diskPath;
    const up = vm.events.history.find((e) => e.type === 'qemu-up');
    qemuPid = up?.type === 'qemu-up' ? up.pid : undefined;
    await vm.ready;
    t.is(vm.state, 'running', 'the guest stays up until we close it');
  }
  t.false(processAlive(qemuPid));
  t.false(existsSync(diskPath), 'temp disk removed');
});
