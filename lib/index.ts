// The public face of lazyboot (`import … from 'lazyboot'`): what a CI harness or test runner needs
// to boot images lazily — launch(), the copy-on-read device, the repository, process-wide opt-ins,
// every error class a public call can throw, and their types. The parts' own APIs are subpath
// exports: 'lazyboot/vmm' (QEMU, QMP, the VM), 'lazyboot/guest' (agent and events),
// 'lazyboot/nbd' (NBD client and server), 'lazyboot/block' (backends, map, manifests).
// test/public-api.test.ts pins the list: adding a name here is a decision, not an accident.

// Booting.
export { launch, type LaunchOptions, type LazyVm, type VmEvent, type ExecResult, type VmState, type RunCommandOptions, type RunOutcome, type CopyResult, type LiveSnapshotRequest, type LiveSnapshotResult } from './launch.js';
export { VM_DEFAULTS, type VmOptions, type AccelRequest, type Machine } from '../vmm/vm-options.js';
export { installSignalTeardown, teardownOnUncaughtException } from './base/cleanup.js';
export { tuneProcess, type ProcessRole } from './process-tuning.js';

// The copy-on-read device on its own (a disk over NBD for a QEMU you start yourself).
export { openCorDevice, type CorDevice, type CorDeviceOptions, type CorStats, type FetchErrorEvent } from './cor/device.js';
export type { BlockCacheOptions } from './cache/cache-location.js';

// The image repository.
export { Repository, type ImageSummary, type ImportOptions, type ImportResult, type NewImage, type ImageCheck, type OpenOptions as RepositoryOpenOptions } from './repo/repository.js';
export type { Manifest } from './repo/manifest-format.js';

// Errors: every class derives from LazybootError (`toLine()` is the one line the CLI prints).
export { LazybootError, UsageError } from './base/errors.js';
export { FileSystemFailed } from './base/system-error.js';
export { BlockError, type BlockErrorCode } from './block/backend.js';
export * from '../vmm/errors.js';
export * from '../guest/errors.js';
export * from './cor/errors.js';
export * from './fetch/errors.js';
export * from './map/errors.js';
export * from './repo/errors.js';
export * from './nbd/errors.js';

// Snapshots: ship a disk's modified blocks as a new image version ('lazyboot/write' has the
// repository's write path itself: sessions, the in-process writer, the HTTP server and client).
export { snapshot, type SnapshotOptions, type SnapshotResult, type SnapshotProgress } from './snapshot/snapshot.js';
export { replicate, type ReplicateOptions, type Replication, type ReplicationSettings, type ReplicationPass, type ReplicationTotals } from './snapshot/replicate.js';
export * from './snapshot/errors.js';
export { SnapshotNotTaken } from './snapshot/on-exit.js';
export { WriteTargetUnreachable, WriteRefused } from './write/errors.js';
