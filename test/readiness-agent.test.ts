// storage-ready for an image without lazyboot's hooks: `debian-plain` (stock initramfs and
// qemu-guest-agent) booted lazily through launch() and through `lazyboot boot`; the guest agent
// reports `/` on the virtio disk, and the VM says the agent was the source.
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { launch } from '../lib/launch.js';
import { CLI, importImage, leftovers, qemuProcessesMentioning, scratchDir, serveRepository } from './boot-support.js';

const BOOT_TIMEOUT_MS = 240_000;

test.serial('debian-plain (no hooks): launch() learns storage-ready from qemu-guest-agent, before running, and says so', async (t) => {
  t.timeout(BOOT_TIMEOUT_MS + 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const served = await serveRepository(t, await importImage(scratch, plain.path, 'plain'));
  const diskPath = path.join(scratch, 'plain.raw');
  await using vm = await launch({ image: 'plain', from: [served.uri], disk: diskPath, agent: 'optional', memoryMiB: 512, timeoutMs: BOOT_TIMEOUT_MS });
  await vm.storageReady;
  t.is(vm.storageReadySource, 'agent');
  const event = vm.events.history.find((e) => e.type === 'storage-ready');
  t.truthy(event);
  if (event?.type === 'storage-ready') t.regex(event.root, /^\/dev\/vda\d*$/, 'the agent saw / on the virtio disk');
  // No hook spoke: no guest event named storage-ready arrived.
  t.false(vm.events.history.some((e) => e.type === 'guest-event' && e.event.event === 'storage-ready'));
  await vm.ready;
  // storage-ready came before the VM counted as running.
  const states = vm.events.history.filter((e) => e.type === 'state').map((e) => (e.type === 'state' ? e.to : ''));
  t.true(states.indexOf('storage-ready') >= 0 && states.indexOf('storage-ready') < states.indexOf('running'), states.join(' → '));
});

test.serial('`lazyboot boot debian-plain` prints storage-ready from the guest agent and its source in the summary', async (t) => {
  t.timeout(BOOT_TIMEOUT_MS + 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const served = await serveRepository(t, await importImage(scratch, plain.path, 'plain'));
  const tmp = path.join(scratch, 'tmp');
  await execa('mkdir', ['-p', tmp]);
  const child = execa('node', [CLI, 'boot', 'plain', '--from', served.uri, '--memory', '512M', '--timeout', '240s'], { env: { TMPDIR: tmp }, reject: false });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    // Seen the agent's storage-ready: stop the boot the way a user does.
    if (/storage-ready at .*qemu-guest-agent/.test(stderr)) child.kill('SIGTERM');
  });
  const result = await child;
  t.log(stderr);
  t.log(result.stdout);
  t.regex(stderr, /storage-ready at [\d.]+ s: \/ is \/dev\/vda\d* on a native disk \(said by qemu-guest-agent\); fetched/);
  t.regex(result.stdout, /storage-ready: [\d.]+ s \(from the guest agent\)/);
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
});
