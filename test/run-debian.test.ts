// The Debian image through `lazyboot run`, its blocks served by a separate `lazyboot repo serve`:
// commands run in the guest through qemu-guest-agent, the exit code is the guest command's, and the
// guest's writes land in the local disk with their W bits in the map.
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture, repositoryRoot } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir, serveRepository } from './boot-support.js';

// The Debian recipe comes from the guest-images work; until it exists there is nothing to boot.
const debianRecipe = existsSync(path.join(repositoryRoot(), 'fixtures', 'debian.sh'));
const debianTest = debianRecipe ? test.serial : test.skip;

/** True if `needle` occurs anywhere in the (sparse) file. */
async function fileContains(file: string, needle: Buffer): Promise<boolean> {
  const handle = await open(file, 'r');
  try {
    const chunk = Buffer.alloc(8 * 1024 * 1024);
    let carry = Buffer.alloc(0);
    for (let offset = 0; ; ) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, offset);
      if (bytesRead === 0) return false;
      const window = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
      if (window.includes(needle)) return true;
      carry = window.subarray(Math.max(0, window.length - needle.length));
      offset += bytesRead;
    }
  } finally {
    await handle.close();
  }
}

debianTest('debian: `run -- cat /etc/os-release` prints it and exits 0; `-- false` exits 1; guest writes land in the disk and its W bits', async (t) => {
  t.timeout(8 * 60_000);
  const debian = await ensureFixture('debian');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, debian.path, 'debian');
  const served = await serveRepository(t, repoDir);
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const diskPath = path.join(scratch, 'debian.raw');
  const run = (command: string[]) =>
    execa('node', [CLI, 'run', 'debian', '--from', served.uri, '--disk', diskPath, '--memory', '512M', '--timeout', '240s', '--', ...command], {
      env: { TMPDIR: tmp },
      reject: false,
    });

  const started = Date.now();
  const osRelease = await run(['cat', '/etc/os-release']);
  t.log(`first boot + cat: ${Date.now() - started} ms\n${osRelease.stderr}`);
  t.is(osRelease.exitCode, 0);
  t.regex(osRelease.stdout, /^ID=debian$/m);
  t.regex(osRelease.stdout, /VERSION_ID="12"/);

  const falseRun = await run(['false']);
  t.is(falseRun.exitCode, 1);

  // A marker the guest writes must reach the local raw disk, and W bits must record it.
  const marker = `lazyboot-guest-write-${process.pid}-${Date.now()}`;
  {
    await using vm = await launch({ image: 'debian', from: [served.uri], disk: diskPath, agent: true, memory: '512M', timeoutMs: 240_000 });
    await vm.ready;
    const before = vm.stats().modifiedBlocks;
    const wrote = await vm.exec('/bin/sh', ['-c', `echo ${marker} > /var/tmp/lazyboot-marker && sync`]);
    t.is(wrote.exitCode, 0);
    t.true(vm.stats().modifiedBlocks >= before);
  }
  const status = await execa('node', [CLI, 'disk', 'status', '--disk', diskPath, '--json']);
  const parsed = JSON.parse(status.stdout) as { modifiedBlocks: Record<string, number> };
  t.log(status.stdout);
  t.true(Object.values(parsed.modifiedBlocks)[0]! > 0, 'W bits set for the guest writes');
  t.true(await fileContains(diskPath, Buffer.from(marker)), 'the guest write is in the local raw disk');
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(diskPath), []);
});
