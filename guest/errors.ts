// Typed errors of the guest side: the agent or the events port did not answer, or answered "no".
import { LazybootError } from '../lib/base/errors.js';

/** The guest agent did not answer in time (not installed, not started, or the port not attached). */
export class AgentTimeout extends LazybootError {
  constructor(readonly command: string, readonly timeoutMs: number, readonly socketPath: string) {
    super(
      `the guest agent on ${socketPath} did not answer ${command} within ${timeoutMs} ms`,
      'check that qemu-guest-agent runs in the guest and the org.qemu.guest_agent.0 port is attached',
    );
  }
}

/** The agent answered a command with an error object. */
export class AgentCommandFailed extends LazybootError {
  constructor(readonly command: string, readonly errorClass: string, readonly description: string) {
    super(`the guest agent refused ${command}: ${errorClass}: ${description}`, 'check the command and its arguments against the guest agent version');
  }
}

/** The agent socket closed while a command was waiting (QEMU exited, or close() was called). */
export class AgentDisconnected extends LazybootError {
  constructor(readonly socketPath: string, readonly command?: string) {
    super(
      `the guest agent connection ${socketPath} closed${command ? ` while waiting for ${command}` : ''}`,
      'check whether QEMU is still running',
    );
  }
}

/** No lazyboot event of the wanted kind arrived in time (image without our hook, or a slow boot). */
export class GuestEventTimeout extends LazybootError {
  constructor(readonly event: string, readonly timeoutMs: number, readonly socketPath: string) {
    super(
      `no ${event} event on ${socketPath} within ${timeoutMs} ms`,
      'check that the image carries the lazyboot guest hooks and the org.lazyboot.events.0 port is attached',
    );
  }
}

/** The events socket closed before the wanted event arrived (the guest powered off or QEMU exited). */
export class GuestEventsClosed extends LazybootError {
  constructor(readonly event: string, readonly socketPath: string) {
    super(`the events port ${socketPath} closed before ${event} arrived`, 'see the guest console: the boot may have failed');
  }
}

/** The guest agent answers, but `/` is not (yet) on a disk driven by the guest's own driver. */
export class NativeStorageTimeout extends LazybootError {
  constructor(readonly timeoutMs: number, readonly lastSeen: string) {
    super(
      `the guest's root filesystem was not on a virtio/scsi/nvme disk within ${timeoutMs} ms (last seen: ${lastSeen})`,
      'check that the guest boots from the disk lazyboot attached',
    );
  }
}

/** The tiny guest refused a request (bad name or size, or the write failed). */
export class GuestEventRejected extends LazybootError {
  constructor(readonly request: string, readonly reason: string) {
    super(`the guest refused "${request}": ${reason}`, 'use a file name of letters, digits, ".", "_" or "-" and a size in KiB');
  }
}

/** A copy in or out failed; the message names both ends and the reason. */
export class CopyFailed extends LazybootError {
  constructor(readonly from: string, readonly to: string, reason: string, hint: string) {
    super(`cannot copy ${from} to ${to}: ${reason}`, hint);
  }
}

/** A stream port closed (QEMU exited) before the command's output ended. */
export class StreamPortClosed extends LazybootError {
  constructor(readonly port: string) {
    super(`the guest's ${port} port closed before the command's output ended`, 'QEMU has probably exited; watch the guest console (--console)');
  }
}
