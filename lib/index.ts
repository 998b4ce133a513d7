// The public TypeScript API of lazyboot, re-exported from one place.
export * from './errors.js';
export * from './block/backend.js';
export * from './repo/manifest-format.js';
export { launch, parseMemoryMiB, type LaunchOptions, type LazyVm, type VmEvent, type ExecResult, type VmState } from './launch.js';
export * from '../vmm/errors.js';
export { openCorDevice, type CorDevice, type CorDeviceOptions, type CorStats, type FetchErrorEvent } from './cor/device.js';
export { BlockMap, type MapHeader } from './map/block-map.js';
export { MapMismatch, MapCorrupt } from './map/errors.js';
export { RepositoryUnreachable, DigestMismatch } from './fetch/errors.js';
export { NbdClient, NbdConnectError } from './nbd/client.js';
