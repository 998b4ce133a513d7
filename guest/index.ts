// 'lazyboot/guest': the host side of a guest — qemu-guest-agent client, the events port, readiness
// for images without lazyboot's hooks, the QEMU arguments for both ports, and the test image's requests.
export { GuestAgent, waitForAgent, type AgentConnectOptions, type WaitForAgentOptions, type ExecOptions as AgentExecOptions, type ExecResult as AgentExecResult } from './agent-client.js';
export type { AgentFilesystem, AgentDiskAddress, AgentInfo, AgentShutdownMode, AgentFreezeStatus } from './agent-protocol.js';
export { GuestEvents, type GuestEvent, type GuestEventName, type EventsConnectOptions, type WaitForEventOptions } from './events.js';
export { nativeRoot, waitForNativeStorage, NATIVE_BUS_TYPES, type NativeRoot, type NativeStorageWaitOptions } from './readiness.js';
export { guestChannelArgs, tinyStayUpArgs, AGENT_PORT_NAME, EVENTS_PORT_NAME, STAY_UP_FW_CFG_NAME, type GuestChannelOptions } from './qemu-args.js';
export { tinyWriteFile, tinyPowerOff, type TinyWriteResult, type TinyRequestOptions } from './tiny-requests.js';
export * from './errors.js';
