// Typed errors of running a command in the guest: the command could not be started, or the guest
// lacks what lazyboot needs to run it. (A command that ran and failed is an exit code, not an error.)
import { LazybootError } from '../lib/base/errors.js';

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
