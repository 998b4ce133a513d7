// Builds the qemu-system-x86_64 command line for a lazyboot VM: machine, accelerator, disk, QMP,
// serial console and guest channels. Pure: no processes, easy to test and to print.
// Field names and defaults are those of the VM options (vm-options.ts).
import { guestChannelArgs, type GuestChannelOptions } from './guest-channels.js';
import { escapeOption } from '../lib/base/qemu-option.js';
import { VM_DEFAULTS, type Accelerator, type Machine, type VmOptions } from './vm-options.js';

/** The VM's disk: an NBD export on a unix socket (the COR device, qemu-nbd) or a local file. */
export type DiskSpec =
  | { readonly kind: 'nbd'; readonly socketPath: string; readonly exportName: string; readonly readOnly?: boolean }
  | { readonly kind: 'file'; readonly path: string; readonly format?: 'raw' | 'qcow2'; readonly readOnly?: boolean }
  /** A hand-wired block graph (e.g. QEMU's own copy-on-read chain): `-blockdev` nodes, the last one named DISK_NODE. */
  | { readonly kind: 'blockdev'; readonly nodes: readonly Record<string, unknown>[] };

export interface QemuArgsOptions extends Pick<VmOptions, 'memoryMiB' | 'cpus' | 'console' | 'consoleLog' | 'qemuArgs'> {
  /** The accelerator already chosen (chooseAccelerator): no `auto` here. */
  readonly accel: Accelerator;
  /** `none` boots nothing (for tests of the QMP/lifecycle plumbing). */
  readonly machine?: Machine | 'none';
  readonly qmpSocket: string;
  readonly disk?: DiskSpec;
  /** The serial number the guest sees on the disk (virtio-blk `serial`). */
  readonly diskSerial?: string;
  readonly guestChannels?: GuestChannelOptions;
  /** Exit instead of rebooting when the guest reboots (a transient VM ends there). */
  readonly noReboot?: boolean;
}

/** Node name of the disk's block node and id of its virtio-blk device: QMP addresses them. */
export const DISK_NODE = 'lazyboot-disk';
export const DISK_DEVICE = 'lazyboot-disk-dev';

export function buildQemuArgs(options: QemuArgsOptions): string[] {
  const machine = options.machine ?? VM_DEFAULTS.machine;
  const args = ['-nodefaults', '-no-user-config', '-display', 'none'];
  args.push('-machine', machine === 'none' ? 'none' : `${machine},accel=${options.accel}`);
  if (machine !== 'none') {
    // qemu64 is the CPU model both TCG and KVM run everywhere; `-pni` silences TCG's SSE3 warning.
    // (`host`/`max` abort with an MSR assertion under some nested KVMs.)
    args.push('-cpu', options.accel === 'tcg' ? 'qemu64,-pni' : 'qemu64');
    args.push('-m', `${options.memoryMiB ?? VM_DEFAULTS.memoryMiB}M`, '-smp', String(options.cpus ?? VM_DEFAULTS.cpus));
  }
  if (machine === 'q35') {
    // q35's root bus refuses hotplug: one root port gives later device_add calls a home.
    args.push('-device', 'pcie-root-port,id=lazyboot-hotplug,bus=pcie.0,chassis=1');
  }
  args.push('-chardev', `socket,id=lazyboot-qmp,path=${escapeOption(options.qmpSocket)},server=on,wait=off`);
  args.push('-mon', 'chardev=lazyboot-qmp,mode=control');
  if (options.consoleLog && machine !== 'none') {
    const backend = options.console ? 'stdio,signal=off' : 'null';
    args.push('-chardev', `${backend},id=lazyboot-serial,logfile=${escapeOption(options.consoleLog)},logappend=on`);
    args.push('-serial', 'chardev:lazyboot-serial');
  }
  if (options.disk) args.push(...diskArgs(options.disk, options.diskSerial ?? 'lazyboot0'));
  if (options.guestChannels) args.push(...guestChannelArgs(options.guestChannels));
  if (options.noReboot) args.push('-no-reboot');
  if (options.qemuArgs) args.push(...options.qemuArgs);
  return args;
}

function diskArgs(disk: DiskSpec, serial: string): string[] {
  if (disk.kind === 'blockdev') {
    return [...disk.nodes.flatMap((node) => ['-blockdev', JSON.stringify(node)]), ...deviceArgs(serial)];
  }
  const node =
    disk.kind === 'nbd'
      ? {
          driver: 'raw',
          'node-name': DISK_NODE,
          'read-only': disk.readOnly ?? false,
          file: { driver: 'nbd', server: { type: 'unix', path: disk.socketPath }, export: disk.exportName, 'read-only': disk.readOnly ?? false },
        }
      : {
          driver: disk.format ?? 'raw',
          'node-name': DISK_NODE,
          'read-only': disk.readOnly ?? false,
          file: { driver: 'file', filename: disk.path, 'read-only': disk.readOnly ?? false },
        };
  // JSON option syntax: no comma escaping of paths, and the same shape QMP's blockdev-add takes.
  return ['-blockdev', JSON.stringify(node), ...deviceArgs(serial)];
}

function deviceArgs(serial: string): string[] {
  // rerror/werror=report: the guest sees EIO and QEMU emits BLOCK_IO_ERROR instead of pausing.
  const device = { driver: 'virtio-blk-pci', id: DISK_DEVICE, drive: DISK_NODE, serial, bootindex: 1, rerror: 'report', werror: 'report' };
  return ['-device', JSON.stringify(device)];
}
