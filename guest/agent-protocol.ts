// The qemu-guest-agent replies lazyboot uses, as TypeScript types (names as on the wire).

export interface AgentCommandInfo {
  readonly name: string;
  readonly enabled: boolean;
  readonly 'success-response': boolean;
}

export interface AgentInfo {
  readonly version: string;
  readonly supported_commands: readonly AgentCommandInfo[];
}

export interface AgentPciAddress {
  readonly domain: number;
  readonly bus: number;
  readonly slot: number;
  readonly function: number;
}

export interface AgentDiskAddress {
  /** virtio, scsi, nvme, ide, sata, usb, ... */
  readonly 'bus-type': string;
  readonly 'pci-controller': AgentPciAddress;
  readonly bus: number;
  readonly target: number;
  readonly unit: number;
  readonly serial?: string;
  readonly dev?: string;
}

export interface AgentFilesystem {
  readonly name: string;
  readonly mountpoint: string;
  readonly type: string;
  readonly 'used-bytes'?: number;
  readonly 'total-bytes'?: number;
  readonly disk: readonly AgentDiskAddress[];
}

export interface AgentExecStatus {
  readonly exited: boolean;
  readonly exitcode?: number;
  readonly signal?: number;
  readonly 'out-data'?: string;
  readonly 'err-data'?: string;
  readonly 'out-truncated'?: boolean;
  readonly 'err-truncated'?: boolean;
}

export type AgentShutdownMode = 'powerdown' | 'halt' | 'reboot';
export type AgentFreezeStatus = 'thawed' | 'frozen';

/** One reply line: `return` on success, `error` on failure. */
export interface AgentReply {
  readonly return?: unknown;
  readonly error?: { readonly class: string; readonly desc: string };
}
