// The one set of VM options: their names and their defaults, shared by every layer that starts a
// VM (launch() → TransientVm → launchQemu → buildQemuArgs) so no layer renames or re-defaults a
// field. Values are numbers in the unit their name says; text a person types ("1G", "90s") is
// parsed where it is typed (the CLI), except the one memory parser below, which the CLI and
// launch()'s deprecated `memory` share.
import { UsageError } from '../lib/base/errors.js';

export type Accelerator = 'kvm' | 'tcg';
/** `auto` believes only a probe boot, never the mere existence of /dev/kvm (see accel.ts). */
export type AccelRequest = 'auto' | Accelerator;
export type Machine = 'q35' | 'pc';

export interface VmOptions {
  /** Guest memory in MiB. */
  readonly memoryMiB?: number;
  /** Guest CPUs. */
  readonly cpus?: number;
  /** QEMU machine type; q35 gets one PCIe root port for later hotplug. */
  readonly machine?: Machine;
  readonly accel?: AccelRequest;
  /** Also show the guest's serial console on our stdout. */
  readonly console?: boolean;
  /** Keep the serial console log in this file (default: inside the VM's run dir, removed at close). */
  readonly consoleLog?: string;
  /** Time allowed from start to running (`ready`); 0 = no limit. Also bounds the wait for the agent. */
  readonly timeoutMs?: number;
  /**
   * true: the VM is running once qemu-guest-agent answers (needed for exec). 'optional': use the
   * agent if the guest has one, but boot-complete already counts as running. false: no agent.
   */
  readonly agent?: boolean | 'optional';
  /** Extra QEMU arguments, appended to the command line (e.g. fw_cfg entries). */
  readonly qemuArgs?: readonly string[];
  /** QEMU binary (default: $LAZYBOOT_QEMU, else qemu-system-x86_64 on PATH; resolved in qemu-process.ts). */
  readonly qemuBinary?: string;
  /** How long QEMU gets to quit over QMP at teardown before it is killed. */
  readonly quitGraceMs?: number;
}

/** Every default of a VM option, and the only place they are written. */
export const VM_DEFAULTS = {
  memoryMiB: 512,
  cpus: 1,
  machine: 'q35',
  accel: 'auto',
  console: false,
  timeoutMs: 300_000,
  agent: false,
  qemuArgs: [],
  quitGraceMs: 3000,
} as const satisfies Required<Omit<VmOptions, 'consoleLog' | 'qemuBinary'>>;

/** VM options with every default filled in (consoleLog and qemuBinary have no fixed default). */
export type ResolvedVmOptions = Required<Omit<VmOptions, 'consoleLog' | 'qemuBinary'>> & Pick<VmOptions, 'consoleLog' | 'qemuBinary'>;

/** Fills in the defaults and refuses values QEMU would reject late and obscurely. */
export function withVmDefaults(options: VmOptions): ResolvedVmOptions {
  const resolved: ResolvedVmOptions = {
    memoryMiB: options.memoryMiB ?? VM_DEFAULTS.memoryMiB,
    cpus: options.cpus ?? VM_DEFAULTS.cpus,
    machine: options.machine ?? VM_DEFAULTS.machine,
    accel: options.accel ?? VM_DEFAULTS.accel,
    console: options.console ?? VM_DEFAULTS.console,
    consoleLog: options.consoleLog,
    timeoutMs: options.timeoutMs ?? VM_DEFAULTS.timeoutMs,
    agent: options.agent ?? VM_DEFAULTS.agent,
    qemuArgs: options.qemuArgs ?? VM_DEFAULTS.qemuArgs,
    qemuBinary: options.qemuBinary,
    quitGraceMs: options.quitGraceMs ?? VM_DEFAULTS.quitGraceMs,
  };
  if (!Number.isInteger(resolved.memoryMiB) || resolved.memoryMiB < 1) throw new UsageError(`invalid guest memory ${resolved.memoryMiB} MiB`, 'give a whole number of MiB, e.g. 512');
  if (!Number.isInteger(resolved.cpus) || resolved.cpus < 1) throw new UsageError(`invalid CPU count ${resolved.cpus}`, 'give a whole number, e.g. 1');
  if (!(resolved.timeoutMs >= 0)) throw new UsageError(`invalid boot timeout ${resolved.timeoutMs} ms`, 'give milliseconds, or 0 for no limit');
  return resolved;
}

/** "512M", "1G", "2GiB", "2048" (MiB) or a number of MiB → MiB. */
export function parseMemoryMiB(value: number | string): number {
  if (typeof value === 'number') return value;
  const match = /^(\d+)\s*([MG])?i?B?$/i.exec(value.trim());
  if (!match) throw new UsageError(`invalid memory size ${JSON.stringify(value)}`, 'use e.g. 512M or 1G');
  const amount = Number(match[1]);
  return match[2]?.toUpperCase() === 'G' ? amount * 1024 : amount;
}
