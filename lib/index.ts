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
export { GuestAgent, waitForAgent, type AgentConnectOptions, type ExecOptions as AgentExecOptions, type ExecResult as AgentExecResult } from '../guest/agent-client.js';
export type { AgentFilesystem, AgentDiskAddress, AgentInfo, AgentShutdownMode, AgentFreezeStatus } from '../guest/agent-protocol.js';
export { GuestEvents, type GuestEvent, type GuestEventName } from '../guest/events.js';
export { nativeRoot, waitForNativeStorage, type NativeRoot } from '../guest/readiness.js';
export { guestChannelArgs, tinyStayUpArgs, AGENT_PORT_NAME, EVENTS_PORT_NAME } from '../guest/qemu-args.js';
export { AgentTimeout, AgentCommandFailed, AgentDisconnected, GuestEventTimeout, GuestEventsClosed, NativeStorageTimeout } from '../guest/errors.js';
