// Typed errors of the VMM side (QMP, QEMU process, accelerator, VM lifecycle): one line each,
// with a hint saying what to do.
import { LazybootError } from '../lib/base/errors.js';

/** QEMU answered a QMP command with an error object ({class, desc}). */
export class QmpError extends LazybootError {
  constructor(readonly command: string, readonly errorClass: string, readonly description: string) {
    super(`QMP command ${command} failed (${errorClass}): ${description}`);
  }
}

/** The QMP connection closed (QEMU exited or the socket broke) before a reply came. */
export class QmpConnectionClosed extends LazybootError {
  constructor(detail: string) {
    super(`QMP connection closed: ${detail}`, 'QEMU has probably exited; see its log');
  }
}

/** No reply (or greeting) from QEMU within the time allowed. */
export class QmpTimeout extends LazybootError {
  constructor(what: string, timeoutMs: number) {
    super(`QEMU did not answer ${what} within ${timeoutMs} ms`, 'QEMU may be hung; it will be killed');
  }
}

/** The QEMU binary does not exist or cannot be run. */
export class QemuNotFound extends LazybootError {
  constructor(binary: string) {
    super(`QEMU binary not found: ${binary}`, 'install it (apt-get install qemu-system-x86) or set LAZYBOOT_QEMU');
  }
}

/** QEMU exited while lazyboot still needed it. */
export class QemuExited extends LazybootError {
  constructor(readonly exitCode: number | undefined, readonly signal: string | undefined, readonly stderrTail: string) {
    const how = signal ? `was killed by ${signal}` : `exited with code ${exitCode}`;
    const why = stderrTail.trim().split('\n').filter(Boolean).pop();
    super(`QEMU ${how}${why ? ` (${why.trim()})` : ''}`, 'watch the guest console (--console, --console-log FILE)');
  }
}

/** KVM was asked for but cannot run guests on this machine. */
export class KvmUnavailable extends LazybootError {
  constructor(reason: string) {
    super(`KVM cannot run guests here: ${reason}`, 'use --accel tcg (or --accel auto to fall back by itself)');
  }
}

/** An action the VM's current lifecycle state does not allow (refused, never half-done). */
export class IllegalVmAction extends LazybootError {
  constructor(readonly action: string, readonly state: string) {
    super(`cannot ${action} a VM that is ${state}`);
  }
}

/** The guest reported an I/O error on its disk (QMP BLOCK_IO_ERROR), e.g. the repository died. */
export class GuestDiskError extends LazybootError {
  constructor(readonly operation: string, readonly reason: string) {
    super(`the guest's disk failed a ${operation}: ${reason}`, 'check that the repository is reachable (lazyboot repo serve) and retry');
  }
}

/** The boot did not reach the awaited milestone in time. */
export class BootTimeout extends LazybootError {
  constructor(milestone: string, timeoutMs: number) {
    super(`the guest did not reach ${milestone} within ${Math.round(timeoutMs / 1000)} s`, 'watch the guest console (--console, --console-log FILE); raise the boot timeout if the machine is slow (boot --timeout, run --boot-timeout)');
  }
}

/** The VM ended (the guest powered off) before reaching what the caller waited for. */
export class VmEndedEarly extends LazybootError {
  constructor(readonly waitedFor: string, readonly state: string) {
    super(`the VM was ${state} before it was ${waitedFor}`, 'the guest powered off by itself: watch its console (--console)');
  }
}

/** The guest is up, but nothing said its own storage driver has the disk: no hooks, and no agent that sees `/` on a native disk. */
export class StorageReadinessUnknown extends LazybootError {
  constructor(agentAsked: boolean, options: { waitedMs?: number; forPivot?: boolean } = {}) {
    const { waitedMs, forPivot = true } = options;
    const sources = agentAsked
      ? 'no lazyboot hook said storage-ready, and qemu-guest-agent did not report / on a virtio/scsi/nvme disk'
      : 'no lazyboot hook said storage-ready, and the guest agent was not used';
    super(
      `${forPivot ? 'cannot pivot: ' : 'no storage-ready: '}${waitedMs === undefined ? 'the guest is up but ' : `after ${Math.round(waitedMs / 1000)} s `}${sources}`,
      'install qemu-guest-agent in the image (or the lazyboot hooks), or boot with --pivot none',
    );
  }
}

/** QEMU reported GUEST_PANICKED: the guest kernel panicked. */
export class GuestPanicked extends LazybootError {
  constructor(readonly info: string | undefined) {
    super(`the guest kernel panicked${info ? ` (${info})` : ''}`, 'read the end of the guest console (--console, --console-log FILE)');
  }
}

/** The image's hook said boot-failed (e.g. its root filesystem did not mount). */
export class GuestBootFailed extends LazybootError {
  constructor(readonly reason: string) {
    super(`the guest reported that its boot failed: ${reason}`, 'read the guest console (--console, --console-log FILE); the image may be damaged');
  }
}
