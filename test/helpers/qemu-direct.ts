// Test helper: starts QEMU (TCG) directly on a local disk file, with the guest channels, a serial
// console log and nothing else. Used by the guest/fixture tests; the real launcher lives in vmm/.
import { execa, type ResultPromise } from 'execa';
import { join } from 'node:path';
import { guestChannelArgs } from '../../guest/qemu-args.js';

export interface DirectVmOptions {
  readonly disk: string;
  readonly format?: 'raw' | 'qcow2';
  /** Directory for the sockets and the console log. */
  readonly dir: string;
  readonly memoryMiB?: number;
  /** How the disk is attached (default virtio-blk). */
  readonly diskBus?: 'virtio-blk' | 'virtio-scsi';
  /** Extra QEMU arguments (the name the VM options use, vmm/vm-options.ts). */
  readonly qemuArgs?: readonly string[];
}

export interface DirectVm {
  readonly agentSocket: string;
  readonly eventsSocket: string;
  readonly consoleLog: string;
  /** Resolves when QEMU exits, with its exit code (undefined when killed by a signal). */
  readonly exited: Promise<{ exitCode?: number; signal?: string }>;
  readonly pid?: number;
  /** Kills QEMU if it still runs and waits for it to be gone. */
  stop(): Promise<void>;
}

export function startQemuDirect(options: DirectVmOptions): DirectVm {
  const agentSocket = join(options.dir, 'agent.sock');
  const eventsSocket = join(options.dir, 'events.sock');
  const consoleLog = join(options.dir, 'console.log');
  const args = [
    '-machine', 'q35', '-accel', 'tcg', '-cpu', 'qemu64,-pni',
    '-m', String(options.memoryMiB ?? 256),
    '-nodefaults', '-display', 'none', '-no-reboot',
    '-serial', `file:${consoleLog}`,
    '-drive', `file=${options.disk},format=${options.format ?? 'raw'},if=none,id=disk0`,
    ...(options.diskBus === 'virtio-scsi'
      ? ['-device', 'virtio-scsi-pci,id=scsi0', '-device', 'scsi-hd,drive=disk0,bus=scsi0.0']
      : ['-device', 'virtio-blk-pci,drive=disk0']),
    ...guestChannelArgs({ agentSocket, eventsSocket }),
    ...(options.qemuArgs ?? []),
  ];
  const child: ResultPromise = execa('qemu-system-x86_64', args, { reject: false, stdin: 'ignore' });
  const exited = child.then((result) => ({ exitCode: result.exitCode, signal: result.signal }));
  return {
    agentSocket,
    eventsSocket,
    consoleLog,
    exited,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
