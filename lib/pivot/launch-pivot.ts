// The pivot of one launched VM, whenever it is asked for: at storage-ready (`pivot: 'live'`) or
// later from outside (`vm.pivot()`, `lazyboot pivot NAME` on a VM booted with `--pivot none`).
// It places the qcow2 metadata file, runs the live pivot (live-pivot.ts), starts QEMU's fill and,
// once that completed, lets the COR device leave the data path (the disk stays locked by us until
// the fold). After QEMU has exited, it folds what QEMU wrote and allocated into the map.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CorDevice } from '../cor/device.js';
import { lockDisk, type DiskLock } from '../cor/disk-lock.js';
import type { TransientVm } from '../../vmm/vm.js';
import { ClusterSizeUnsupported, QCOW2_MAX_CLUSTER, QCOW2_MIN_CLUSTER } from '../../vmm/qcow2-metadata.js';
import { IllegalVmAction } from '../../vmm/errors.js';
import { pivotWhenStorageReady, type PivotOutcome } from './live-pivot.js';
import { foldNativeIntoMap, type FoldResult } from './fold-native.js';
import { metadataPathOf } from './native-metadata.js';

export interface PivotRequest {
  /** Fill the rest of the disk with QEMU's block-stream after the pivot. */
  readonly fill: boolean;
  /** The fill's speed in bytes/s; 0 = unlimited. */
  readonly fillRate: number;
}

export interface StartedPivot {
  readonly outcome: PivotOutcome;
  /** True once the fill completed and the COR device has left; false without a fill or when it failed. */
  readonly filled: Promise<boolean>;
}

/** Refuses a block size no qcow2 cluster can have (before QEMU starts, for `pivot: 'live'`). */
export function assertPivotable(blockSize: number): void {
  const powerOfTwo = (blockSize & (blockSize - 1)) === 0;
  if (!powerOfTwo || blockSize < QCOW2_MIN_CLUSTER || blockSize > QCOW2_MAX_CLUSTER) throw new ClusterSizeUnsupported(blockSize);
}

export class LaunchPivot {
  #started: Promise<StartedPivot> | undefined;
  #metadataPath: string | undefined;
  /** A temp dir for the metadata file of a temp disk or a block device. */
  #pivotDir: string | undefined;
  /** Taken when the COR device closes after the fill, so the disk stays ours until the fold. */
  #heldLock: DiskLock | undefined;
  #leaving: Promise<void> | undefined;
  #deviceLeft = false;

  constructor(
    private readonly vm: TransientVm,
    private readonly device: CorDevice,
    private readonly where: { readonly diskPath: string; readonly diskGiven: boolean; readonly tempDiskDir: string | undefined; readonly log?: (line: string) => void },
    /** Called just before the COR device closes after the fill (its stats are final then). */
    private readonly onDeviceLeaving: () => void,
  ) {}

  /** The COR device closed after the fill. */
  get deviceLeft(): boolean {
    return this.#deviceLeft;
  }

  /** Pivots once (a second call gets the first one's result); waits for storage-ready. */
  start(request: PivotRequest): Promise<StartedPivot> {
    this.#started ??= this.#pivot(request);
    return this.#started;
  }

  async #pivot(request: PivotRequest): Promise<StartedPivot> {
    assertPivotable(this.device.manifest.blockSize);
    if (this.vm.lifecycle.isFinal || this.vm.state === 'stopping') throw new IllegalVmAction('pivot', this.vm.state);
    const outcome = await pivotWhenStorageReady(this.vm, this.device, this.where.diskPath, await this.#placeMetadata());
    const filled = request.fill ? this.#fill(request.fillRate) : Promise.resolve(false);
    return { outcome, filled };
  }

  /**
   * Beside a disk file (so that an interrupted pivot is found and recorded by the next launch,
   * recoverInterruptedPivot), else (a temp disk, a block device) in a temp dir.
   */
  async #placeMetadata(): Promise<string> {
    const besideDisk = this.where.diskGiven && (await stat(this.where.diskPath)).isFile();
    if (besideDisk) return (this.#metadataPath = metadataPathOf(this.where.diskPath));
    this.#pivotDir = this.where.tempDiskDir ?? (await mkdtemp(path.join(tmpdir(), 'lazyboot-pivot-')));
    return (this.#metadataPath = path.join(this.#pivotDir, 'native.qcow2'));
  }

  async #fill(rate: number): Promise<boolean> {
    try {
      await this.vm.fill(rate);
    } catch (error) {
      if (!this.vm.lifecycle.isFinal && this.vm.state !== 'stopping') this.where.log?.((error as Error).message);
      return false;
    }
    // QEMU alone has the disk now: the COR device leaves; the disk stays locked until the fold.
    this.onDeviceLeaving();
    this.#deviceLeft = true;
    this.#leaving = this.device.close().then(async () => {
      this.#heldLock = await lockDisk(this.where.diskPath);
    });
    await this.#leaving;
    return true;
  }

  /** After QEMU has exited and the COR device closed: QEMU's writes and allocation into the map. */
  async afterQemuExit(): Promise<FoldResult | undefined> {
    await this.#leaving?.catch(() => undefined);
    const metadataPath = this.#metadataPath;
    if (!this.vm.isNative || !metadataPath) return undefined;
    const folded = await foldNativeIntoMap({ disk: this.where.diskPath, metadataPath, manifest: this.device.manifest, heldLock: this.#heldLock });
    this.#heldLock = undefined;
    await rm(metadataPath, { force: true }); // recorded: nothing left to recover
    this.where.log?.(`after the pivot: ${folded.newlyPresent} blocks made present by QEMU, ${folded.written} written by the guest (from the ${folded.writesFrom === 'bitmap' ? 'writes bitmap' : 'manifest digests'}), recorded in the map`);
    return folded;
  }

  /** Last, whatever happened: the disk lock held since the fill, and the metadata's temp dir. */
  async release(): Promise<void> {
    await this.#leaving?.catch(() => undefined);
    await this.#heldLock?.release();
    this.#heldLock = undefined;
    if (this.#pivotDir && this.#pivotDir !== this.where.tempDiskDir) await rm(this.#pivotDir, { recursive: true, force: true });
  }
}
