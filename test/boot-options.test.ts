// The VM options: one set of names and defaults (vmm/vm-options.ts), the text a user types parsed
// at the CLI (durations, sizes, memory), and the QEMU command line built from them.
import test from 'ava';
import { launchOptionsOf, type BootArgs } from '../lib/cli/boot-options.js';
import { parseDurationMs, parseSizeBytes } from '../lib/cli/units.js';
import { vmOptionsOf } from '../lib/launch-options.js';
import { UsageError } from '../lib/base/errors.js';
import { buildQemuArgs, DISK_NODE } from '../vmm/qemu-args.js';
import { parseMemoryMiB, VM_DEFAULTS, withVmDefaults } from '../vmm/vm-options.js';

test('durations: seconds by default, ms/s/m/h suffixes, bad input is a UsageError', (t) => {
  t.is(parseDurationMs('300'), 300_000);
  t.is(parseDurationMs('90s'), 90_000);
  t.is(parseDurationMs('5m'), 300_000);
  t.is(parseDurationMs('1h'), 3_600_000);
  t.is(parseDurationMs('500ms'), 500);
  t.throws(() => parseDurationMs('soon'), { instanceOf: UsageError });
});

test('sizes: bytes by default, K/M/G/T as powers of 1024, bad input is a UsageError', (t) => {
  t.is(parseSizeBytes('0'), 0);
  t.is(parseSizeBytes('4096'), 4096);
  t.is(parseSizeBytes('512K'), 512 * 1024);
  t.is(parseSizeBytes('8M'), 8 * 1024 * 1024);
  t.is(parseSizeBytes('8MiB'), 8 * 1024 * 1024);
  t.is(parseSizeBytes('1.5G'), 1.5 * 1024 ** 3);
  t.throws(() => parseSizeBytes('big'), { instanceOf: UsageError });
});

test('memory: MiB by default, M and G suffixes, bad input is a UsageError', (t) => {
  t.is(parseMemoryMiB(256), 256);
  t.is(parseMemoryMiB('512M'), 512);
  t.is(parseMemoryMiB('1G'), 1024);
  t.is(parseMemoryMiB('2GiB'), 2048);
  t.throws(() => parseMemoryMiB('lots'), { instanceOf: UsageError });
});

test('the QEMU command line: TCG CPU model, NBD disk as JSON blockdev + virtio-blk with serial, QMP socket, guest channels', (t) => {
  const args = buildQemuArgs({
    accel: 'tcg',
    memoryMiB: 256,
    cpus: 2,
    qmpSocket: '/run/x,y/qmp.sock',
    consoleLog: '/run/console.log',
    disk: { kind: 'nbd', socketPath: '/run/cor.sock', exportName: 'disk' },
    diskSerial: 'lazyboot0',
    guestChannels: { agentSocket: '/run/agent.sock', eventsSocket: '/run/a,b/events.sock' },
    noReboot: true,
  });
  const after = (flag: string) => args[args.indexOf(flag) + 1];
  t.is(after('-machine'), 'q35,accel=tcg');
  t.is(after('-cpu'), 'qemu64,-pni');
  t.is(after('-m'), '256M');
  t.is(after('-smp'), '2');
  t.true(args.includes('-no-reboot'));
  t.true(args.includes('-nodefaults'));
  t.regex(args.join(' '), /pcie-root-port/);
  t.regex(args.join(' '), /path=\/run\/x,,y\/qmp\.sock/, 'commas in paths are escaped');
  t.regex(args.join(' '), /socket,id=lazyboot-events,path=\/run\/a,,b\/events\.sock,server=on/, 'the guest channels escape theirs the same way');
  const blockdev = JSON.parse(after('-blockdev')!);
  t.like(blockdev, { driver: 'raw', 'node-name': DISK_NODE, file: { driver: 'nbd', server: { type: 'unix', path: '/run/cor.sock' }, export: 'disk' } });
  const jsonDevice = args.filter((_, i) => args[i - 1] === '-device').find((value) => value.startsWith('{'));
  const device = JSON.parse(jsonDevice ?? '{}');
  t.like(device, { driver: 'virtio-blk-pci', drive: DISK_NODE, serial: 'lazyboot0' });
  t.regex(args.join(' '), /name=org\.qemu\.guest_agent\.0/);
  t.regex(args.join(' '), /name=org\.lazyboot\.events\.0/);
});

test('defaults live in one place: absent options take VM_DEFAULTS, given ones are kept, bad numbers refused', (t) => {
  t.deepEqual(withVmDefaults({}), { ...VM_DEFAULTS, consoleLog: undefined, qemuBinary: undefined });
  t.like(withVmDefaults({ memoryMiB: 1024, cpus: 2, accel: 'tcg', timeoutMs: 0 }), { memoryMiB: 1024, cpus: 2, accel: 'tcg', timeoutMs: 0, machine: 'q35' });
  t.throws(() => withVmDefaults({ memoryMiB: 0 }), { instanceOf: UsageError });
  t.throws(() => withVmDefaults({ cpus: 1.5 }), { instanceOf: UsageError });
  // buildQemuArgs given nothing builds the same machine as the defaults.
  const args = buildQemuArgs({ accel: 'tcg', qmpSocket: '/run/qmp.sock' });
  t.is(args[args.indexOf('-m') + 1], `${VM_DEFAULTS.memoryMiB}M`);
  t.is(args[args.indexOf('-smp') + 1], String(VM_DEFAULTS.cpus));
  t.is(args[args.indexOf('-machine') + 1], `${VM_DEFAULTS.machine},accel=tcg`);
});

test('the CLI parses the text it was given and leaves absent flags to the defaults', (t) => {
  const bare = launchOptionsOf({ image: 'tiny' } as BootArgs);
  for (const key of ['memoryMiB', 'cpus', 'accel', 'console', 'timeoutMs', 'qemuArgs', 'fetchTimeoutMs', 'fetchAheadBytes'] as const) {
    t.is(bare[key], undefined, `${key} is left to the defaults`);
  }
  const given = launchOptionsOf({
    image: 'tiny', memory: '1G', cpus: 2, accel: 'tcg', console: true, 'console-log': '/tmp/c.log', timeout: '90s',
    'qemu-arg': ['-no-reboot'], 'fetch-timeout': '500ms', 'fetch-ahead': '0',
  });
  t.like(given, { memoryMiB: 1024, cpus: 2, accel: 'tcg', console: true, consoleLog: '/tmp/c.log', timeoutMs: 90_000, qemuArgs: ['-no-reboot'], fetchTimeoutMs: 500, fetchAheadBytes: 0 });
  t.throws(() => launchOptionsOf({ image: 'tiny', 'fetch-ahead': 'lots' }), { instanceOf: UsageError });
});

test('the boot trace is on unless --no-trace; --trace-dir says where', (t) => {
  t.deepEqual(launchOptionsOf({ image: 'tiny' } as BootArgs).trace, { dir: undefined });
  t.deepEqual(launchOptionsOf({ image: 'tiny', 'trace-dir': '/var/traces' } as BootArgs).trace, { dir: '/var/traces' });
  t.is(launchOptionsOf({ image: 'tiny', trace: false } as BootArgs).trace, false);
});

test("launch()'s deprecated `memory` goes through the same parser into memoryMiB; both at once is refused", (t) => {
  t.is(vmOptionsOf({ image: 'tiny', memory: '256M' }).memoryMiB, 256);
  t.is(vmOptionsOf({ image: 'tiny', memory: 128 }).memoryMiB, 128);
  t.is(vmOptionsOf({ image: 'tiny', memoryMiB: 64 }).memoryMiB, 64);
  t.throws(() => vmOptionsOf({ image: 'tiny', memory: '1G', memoryMiB: 512 }), { instanceOf: UsageError });
});
