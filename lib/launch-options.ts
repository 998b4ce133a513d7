// What launch() takes: the VM options (vmm/vm-options.ts, the one set of names and defaults),
// where the image and the disk come from, and the copy-on-read device's options a caller may need
// (the device's own names: CorDeviceOptions in cor/device.ts).
import type { CorDeviceOptions } from './cor/device.js';
import type { BootTraceOptions } from './cor/boot-tracing.js';
import type { ReplicationSettings } from './snapshot/replicate.js';
import type { ExitSnapshot } from './snapshot/on-exit.js';
import { UsageError } from './base/errors.js';
import { parseMemoryMiB, type VmOptions } from '../vmm/vm-options.js';

export type PivotMode = 'live' | 'reboot' | 'none';

export interface LaunchOptions extends VmOptions, Pick<CorDeviceOptions, 's3Endpoint' | 'fill' | 'fillRate' | 'fetchTimeoutMs' | 'fetchAheadBytes' | 'cache' | 'log' | 'onConnectionEvent'> {
  /** `name` or `name@N` in the repository. */
  readonly image: string;
  /** Local disk (raw file or block device; created sparse if missing, map beside it). Default: a temp disk removed at close. */
  readonly disk?: string;
  /** Repository URIs (directory, nbd+unix:///?socket=…, nbd://…); none = the embedded default repository. */
  readonly from?: readonly string[];
  /**
   * `live`: once the guest's own storage driver has the disk (hook or guest agent), pause it for
   * milliseconds and move its disk to QEMU's native graph (the COR device becomes its read-through
   * backing). `reboot`: at storage-ready the transient QEMU is shut down and a native QEMU boots the
   * machine from the native graph (what the first boot read is local: its boot fetches nothing
   * before storage-ready); launch() returns once that QEMU has started. `none` (default): stay on
   * the COR device. With `live` or `reboot`, a disk whose earlier pivot was interrupted (QEMU
   * killed) is resumed: QEMU boots straight on the native graph and the fill goes on.
   */
  readonly pivot?: PivotMode;
  /**
   * After a pivot: how long QEMU's fill waits for a repository that went away (it retries every few
   * seconds) before it stops with a report; the guest runs on, a later boot of the disk finishes
   * the fill. Default 10 minutes (FILL_GIVE_UP_MS).
   */
  readonly fillOutageMs?: number;
  /**
   * @deprecated Use `memoryMiB`. Guest memory as MiB or a size like "512M", "1G", parsed by the
   * same parser as the CLI's --memory. Kept until its last caller (scripts/bench-boot.ts) moves.
   */
  readonly memory?: number | string;
  /**
   * The boot trace (default on, traces under $XDG_CACHE_HOME/lazyboot/traces): a first boot of an
   * image version records the blocks it reads until the guest is ready; later boots fetch them
   * ahead of the guest. `false` turns both off; see BootTraceOptions for the rest.
   */
  readonly trace?: BootTraceOptions | false;
  /**
   * Upload the guest's writes to these repositories in the background while the VM runs (no
   * version is committed: a later snapshot only commits). Writes made after a live pivot are
   * QEMU's: they reach the map when the VM ends, for the snapshot, not the replicator.
   */
  readonly replicate?: ReplicationSettings;
  /**
   * When the VM has ended (the disk closed, after a pivot the writes folded into the map), ship
   * the disk as a new version `as` (to `to`, default the `from` directory or the default
   * repository): see LazyVm.snapshotted.
   */
  readonly snapshotOnExit?: ExitSnapshot;
}

/** The launch's VM options, the deprecated `memory` folded into `memoryMiB` (the one place it is read). */
export function vmOptionsOf(options: LaunchOptions): VmOptions {
  if (options.memory === undefined) return options;
  if (options.memoryMiB !== undefined) throw new UsageError('both memory and memoryMiB given', 'give memoryMiB only');
  return { ...options, memoryMiB: parseMemoryMiB(options.memory) };
}
