// Parsing of the boot options a user types: durations, memory sizes, and the QEMU command line built from them.
import test from 'ava';
import { parseDurationMs } from '../lib/cli/boot-options.js';
import { parseMemoryMiB } from '../lib/launch.js';
import { UsageError } from '../lib/errors.js';
import { buildQemuArgs, DISK_NODE } from '../vmm/qemu-args.js';

test('durations: seconds by default, ms/s/m/h suffixes, bad input is a UsageError', (t) => {
  t.is(parseDurationMs('300'), 300_000);
  t.is(parseDurationMs('90s'), 90_000);
  t.is(parseDurationMs('5m'), 300_000);
  t.is(parseDurationMs('1h'), 3_600_000);
  t.is(parseDurationMs('500ms'), 500);
  t.throws(() => parseDurationMs('soon'), { instanceOf: UsageError });
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
    serialLog: '/run/console.log',
    disk: { kind: 'nbd', socketPath: '/run/cor.sock', exportName: 'disk' },
    diskSerial: 'lazyboot0',
    guestChannels: { agentSocket: '/run/agent.sock', eventsSocket: '/run/events.sock' },
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
  const blockdev = JSON.parse(after('-blockdev')!);
  t.like(blockdev, { driver: 'raw', 'node-name': DISK_NODE, file: { driver: 'nbd', server: { type: 'unix', path: '/run/cor.sock' }, export: 'disk' } });
  const jsonDevice = args.filter((_, i) => args[i - 1] === '-device').find((value) => value.startsWith('{'));
  const device = JSON.parse(jsonDevice ?? '{}');
  t.like(device, { driver: 'virtio-blk-pci', drive: DISK_NODE, serial: 'lazyboot0' });
  t.regex(args.join(' '), /name=org\.qemu\.guest_agent\.0/);
  t.regex(args.join(' '), /name=org\.lazyboot\.events\.0/);
});
