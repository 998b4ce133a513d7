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

/** The block job ended with an error (e.g. the repository stayed away): the guest runs on, what is missing is still read through. */
export class FillJobFailed extends LazybootError {
  constructor(detail: string) {
    super(`the fill (QEMU block-stream) stopped: ${detail}`, 'the guest keeps running and reads what is missing through lazyboot; what was filled is kept: boot the same --disk again (once the repository answers) to finish the fill');
  }
}

/** The pivot could not be completed; the guest's disk is in QEMU's hands or unusable: the VM ends. */
export class PivotFailed extends LazybootError {
  constructor(step: string, detail: string) {
    super(`the pivot to native failed at ${step}: ${detail}`, 'the disk and its map are kept; boot again with the same --disk (add --pivot none to stay transient)');
  }
}

/** The image's block size cannot be a qcow2 cluster size: no native graph for it. */
export class ClusterSizeUnsupported extends LazybootError {
  constructor(blockSize: number) {
    super(`cannot pivot an image of ${blockSize}-byte blocks: qcow2 clusters are powers of two from 512 B to 2 MiB`, 'boot with --pivot none, or import the image with --block-size 64K');
  }
}

/** qemu-img failed on the metadata file. */
export class Qcow2MetadataError extends LazybootError {
  constructor(step: string, detail: string) {
    super(`could not ${step} the qcow2 metadata file: ${detail}`, 'check that qemu-img (qemu-utils) is installed and the disk directory is writable');
  }
}

/** guest-exec refused to start the wrapper, or the command is not executable / not found. */
export class CommandNotStarted extends LazybootError {
  constructor(readonly command: string, readonly reason: 'not-found' | 'not-executable' | 'exec-refused', detail?: string) {
    const why = reason === 'not-found' ? 'not found in the guest' : reason === 'not-executable' ? 'is not an executable file in the guest' : `could not be started: ${detail ?? ''}`;
    super(`${command}: ${why}`, reason === 'not-found' ? "check the name and the guest's PATH (or give a full path)" : 'check the path and its permissions in the guest');
  }
}

/** The guest shows no lazyboot stream ports (an old QEMU command line, or ports held by a leftover process). */
export class GuestStreamsMissing extends LazybootError {
  constructor(detail: string) {
    super(`the guest has no usable org.lazyboot.stdout.0/stderr.0 ports (${detail})`, 'check that the guest kernel has virtio_console and no earlier command still holds the ports');
  }
}
