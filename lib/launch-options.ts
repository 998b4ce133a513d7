// What launch() takes: the VM options (vmm/vm-options.ts, the one set of names and defaults),
// where the image and the disk come from, and the copy-on-read device's options a caller may need
// (the device's own names: CorDeviceOptions in cor/device.ts).
import type { CorDeviceOptions } from './cor/device.js';
import { UsageError } from './base/errors.js';
import { parseMemoryMiB, type VmOptions } from '../vmm/vm-options.js';

export interface LaunchOptions extends VmOptions, Pick<CorDeviceOptions, 'fill' | 'fillRate' | 'fetchTimeoutMs' | 'fetchAheadBytes' | 'cache' | 'log'> {
  /** `name` or `name@N` in the repository. */
  readonly image: string;
  /** Local disk (raw file or block device; created sparse if missing, map beside it). Default: a temp disk removed at close. */
  readonly disk?: string;
  /** Repository URIs (directory, nbd+unix:///?socket=…, nbd://…); none = the embedded default repository. */
  readonly from?: readonly string[];
  /**
   * @deprecated Use `memoryMiB`. Guest memory as MiB or a size like "512M", "1G", parsed by the
   * same parser as the CLI's --memory. Kept until its last caller (scripts/bench-boot.ts) moves.
   */
  readonly memory?: number | string;
}

/** The launch's VM options, the deprecated `memory` folded into `memoryMiB` (the one place it is read). */
export function vmOptionsOf(options: LaunchOptions): VmOptions {
  if (options.memory === undefined) return options;
  if (options.memoryMiB !== undefined) throw new UsageError('both memory and memoryMiB given', 'give memoryMiB only');
  return { ...options, memoryMiB: parseMemoryMiB(options.memory) };
}
