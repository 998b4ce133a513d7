// The Debian image through `lazyboot run`, its blocks served by a separate `lazyboot repo serve`:
// commands run in the guest through qemu-guest-agent, the exit code is the guest command's, and the
// guest's writes land in the local disk with their W bits in the map.
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir, serveRepository } from './boot-support.js';

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

// Never skipped: a missing or renamed recipe fails ensureFixture('debian'), so it fails here too.
test.serial('debian: `run -- cat /etc/os-release` prints it and exits 0; `-- false` exits 1; guest writes land in the disk and its W bits', async (t) => {
  t.timeout(8 * 60_000);
  const debian = await ensureFixture('debian');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, debian.path, 'debian');
  const served = await serveRepository(t, repoDir);
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const diskPath = path.join(scratch, 'debian.raw');
  const run = (command: string[]) =>
    execa('node', [CLI, 'run', 'debian', '--from', served.uri, '--disk', diskPath, '--memory', '512M', '--boot-timeout', '240s', '--', ...command], {
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
    const consoleLog = path.join(scratch, 'launch-console.log');
    await using vm = await launch({ image: 'debian', from: [served.uri], disk: diskPath, agent: true, memoryMiB: 512, timeoutMs: 240_000, consoleLog });
    await vm.ready.catch(async (error: unknown) => {
      // Seen once (not reproduced): AgentDisconnected during the agent handshake. Keep what tells why.
      const qmpEvents = vm.events.history.filter((event) => event.type === 'qmp-event').map((event) => JSON.stringify(event));
      t.log(`QMP events: ${qmpEvents.join('; ') || 'none'}\nconsole tail:\n${(await readFile(consoleLog, 'utf8').catch(() => '')).slice(-3000)}`);
      throw error;
    });
    const before = vm.stats().modifiedBlocks;
    // The marker, then 1 MiB more of new file data: ext4 places a new file in free space, which
    // the earlier boots did not write, so these writes must set W bits on blocks that had none
    // (1 MiB spans at least 16 blocks; one already-modified block cannot absorb it all).
    const wrote = await vm.exec('/bin/sh', ['-c', `echo ${marker} > /var/tmp/lazyboot-marker && head -c 1048576 /dev/urandom >> /var/tmp/lazyboot-marker && sync`]);
    t.is(wrote.exitCode, 0);
    const after = vm.stats().modifiedBlocks;
    t.true(after > before, `modified blocks ${before} -> ${after}: the guest's write set new W bits`);
  }
  const status = await execa('node', [CLI, 'disk', 'status', '--disk', diskPath, '--json']);
  const parsed = JSON.parse(status.stdout) as { modifiedBlocks: Record<string, number> };
  t.log(status.stdout);
  t.true(Object.values(parsed.modifiedBlocks)[0]! > 0, 'W bits set for the guest writes');
  t.true(await fileContains(diskPath, Buffer.from(marker)), 'the guest write is in the local raw disk');
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(diskPath), []);
});
