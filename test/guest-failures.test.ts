// A guest whose boot goes wrong ends the VM with its own error, on a real guest: the tiny image
// with its boot loader's kernel command line changed (syslinux.cfg on its FAT partition, rewritten
// with mcopy; nothing mounted). A kernel panic (the initramfs's init exits at once) is
// GuestPanicked, through the CLI; the init's own boot-failed report (its root is not found) is
// GuestBootFailed, through launch(). Neither reads as "QEMU exited".
import { copyFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { GuestBootFailed, GuestPanicked } from '../vmm/errors.js';
import { CLI, importImage, qemuProcessesMentioning, scratchDir } from './boot-support.js';

/** The tiny image booted with another kernel command line, imported as `name` into a repository dir. */
async function tinyWithCommandLine(scratch: string, name: string, append: string): Promise<string> {
  const tiny = await ensureFixture('tiny');
  const image = path.join(scratch, `${name}.raw`);
  await copyFile(tiny.path, image);
  const config = path.join(scratch, 'syslinux.cfg');
  await writeFile(config, `DEFAULT tiny\nPROMPT 0\nTIMEOUT 0\nLABEL tiny\n  KERNEL /vmlinuz\n  INITRD /initrd.gz\n  APPEND ${append}\n`);
  // The boot FAT partition starts at 1 MiB (fixtures/lib.sh assemble_disk).
  await execa('mcopy', ['-o', '-i', `${image}@@1M`, config, '::syslinux.cfg']);
  return importImage(scratch, image, name);
}

test('a guest kernel panic: `lazyboot boot` fails with GuestPanicked and the panic\'s reason, exit 1, nothing left', async (t) => {
  t.timeout(240_000);
  const scratch = await scratchDir(t);
  // init exits at once: "Kernel panic - not syncing: Attempted to kill init!", then panic=-1 resets.
  const repo = await tinyWithCommandLine(scratch, 'tiny-panic', 'console=ttyS0 quiet panic=-1 rdinit=/bin/false');
  const result = await execa('node', [CLI, 'boot', 'tiny-panic', '--from', repo, '--memory', '256M', '--timeout', '200s'], { reject: false, env: { TMPDIR: scratch } });
  t.log(result.stderr);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /^lazyboot: the guest kernel panicked \(Attempted to kill init!.*\): read the end of the guest console \(--console, --console-log FILE\)$/m);
  t.regex(result.stdout, /summary: tiny-panic@1 failed \(the guest kernel panicked/);
  t.notRegex(result.stderr, /QEMU exited/);
  t.deepEqual(await qemuProcessesMentioning(scratch), []);
});

test('a guest that reports boot-failed (its root is not found): launch()\'s VM fails with GuestBootFailed and the guest\'s reason', async (t) => {
  t.timeout(240_000);
  const scratch = await scratchDir(t);
  const repo = await tinyWithCommandLine(scratch, 'tiny-noroot', 'console=ttyS0 quiet panic=-1 lazyboot.root=LABEL=no-such-root');
  const vm = await launch({ image: 'tiny-noroot', from: [repo], memoryMiB: 256, timeoutMs: 200_000 });
  await vm.closed;
  t.is(vm.state, 'failed');
  t.true(vm.failure instanceof GuestBootFailed, `${vm.failure?.name}: ${vm.failure?.message}`);
  t.is(vm.failure?.message, 'the guest reported that its boot failed: root LABEL=no-such-root not found');
  await t.throwsAsync(vm.ready, { instanceOf: GuestBootFailed });
  t.false(vm.failure instanceof GuestPanicked);
  t.deepEqual(await qemuProcessesMentioning(scratch), []);
});
