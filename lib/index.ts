// The public TypeScript API of lazyboot, re-exported from one place.
export * from './errors.js';
export * from './block/backend.js';
export * from './repo/manifest-format.js';
export { launch, parseMemoryMiB, type LaunchOptions, type LazyVm, type VmEvent, type ExecResult, type VmState } from './launch.js';
export * from '../vmm/errors.js';
