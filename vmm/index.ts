// 'lazyboot/vmm': the VMM layer on its own — QEMU's arguments, the launcher, the QMP client, the
// accelerator probe and the transient VM's lifecycle — for programs that drive QEMU themselves.
export { TransientVm, type VmDisk, type StartVmOptions, type VmEvent, type ExecResult } from './vm.js';
export { QmpClient, type QmpEvent, type QmpGreeting, type QmpConnectOptions } from './qmp.js';
export { chooseAccelerator, type AccelChoice } from './accel.js';
export { launchQemu, type LaunchQemuOptions, type LaunchedQemu } from './launcher.js';
export { buildQemuArgs, type QemuArgsOptions, type DiskSpec } from './qemu-args.js';
export { VM_DEFAULTS, withVmDefaults, parseMemoryMiB, type VmOptions, type ResolvedVmOptions, type AccelRequest, type Accelerator, type Machine } from './vm-options.js';
export type { VmState } from './lifecycle.js';
export * from './errors.js';
