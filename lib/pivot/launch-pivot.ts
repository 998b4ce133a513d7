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
import { QCOW2_MAX_CLUSTER, QCOW2_MIN_CLUSTER } from '../../vmm/qcow2-metadata.js';
import { ClusterSizeUnsupported } from '../../vmm/errors.js';
import { IllegalVmAction } from '../../vmm/errors.js';
import { pivotWhenStorageReady, type PivotOutcome } from './live-pivot.js';
import { foldNativeIntoMap, type FoldResult } from './fold-native.js';
import { metadataPathOf, prepareMetadata } from './native-metadata.js';
import type { NativeGraph } from '../../vmm/native-graph.js';

export interface PivotRequest {
  /** Fill the rest of the disk with QEMU's block-stream after the pivot. */
  readonly fill: boolean;
  /** The fill's speed in bytes/s; 0 = unlimited. */
  readonly fillRate: number;
  /** How long the fill waits for a repository that went away before it stops (default: FILL_GIVE_UP_MS). */
  readonly fillOutageMs?: number;
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

  #vm: TransientVm | undefined;

  constructor(
    private readonly device: CorDevice,
    private readonly where: { readonly diskPath: string; readonly diskGiven: boolean; readonly tempDiskDir: string | undefined; readonly log?: (line: string) => void },
    /** Called just before the COR device closes after the fill (its stats are final then). */
    private readonly onDeviceLeaving: () => void,
  ) {}

  /** The VM this pivot moves (set once QEMU has started). */
  attach(vm: TransientVm): void {
    this.#vm = vm;
  }

  private get vm(): TransientVm {
    if (!this.#vm) throw new IllegalVmAction('pivot', 'starting');
    return this.#vm;
  }

  /**
   * Before QEMU starts, for a VM that boots straight on the native graph (a reboot pivot, or the
   * resume of an interrupted one): the COR device goes read-through now (the single-writer rule:
   * QEMU writes the disk from its first instruction), and the metadata file marks every block the
   * map has present. Returns the graph to boot.
   */
  async prepareNativeBoot(): Promise<NativeGraph> {
    assertPivotable(this.device.manifest.blockSize);
    await this.device.enterReadThrough();
    const { size, blockSize } = this.device.manifest;
    const metadataPath = await this.#placeMetadata();
    const prepared = await prepareMetadata({ disk: this.where.diskPath, path: metadataPath, size, blockSize, isLocal: this.device.heldLocally });
    this.#nativeBootBlocks = prepared.presentBlocks;
    return { metadataPath, dataPath: this.where.diskPath, dataIsBlockDevice: prepared.dataIsBlockDevice, blockSize, backing: { socketPath: this.device.socketPath, exportName: this.device.exportName } };
  }

  #nativeBootBlocks = 0;

  /**
   * The VM booted on the native graph (prepareNativeBoot): the fill starts once the guest's storage
   * driver has the disk (or the guest is up), so the boot's own reads are not queued behind it.
   */
  startAfterNativeBoot(request: PivotRequest, how: 'reboot' | 'resume', fetchedSinceBoot: () => number): Promise<StartedPivot> {
    this.#started ??= (async () => {
      // The guest's own driver has its disk (or the guest is up without saying so): the pivot is done.
      await this.vm.storageReady.catch(() => this.vm.ready);
      const fetched = fetchedSinceBoot();
      this.where.log?.(`native boot (${how}): ${fetched} bytes fetched from the repository before storage-ready`);
      const outcome: PivotOutcome = { how, pauseMs: 0, drainMs: 0, presentBlocks: this.#nativeBootBlocks, fetchedBeforeStorageReady: fetched };
      const filled = request.fill ? this.#fill(request) : Promise.resolve(false);
      return { outcome, filled };
    })();
    return this.#started;
  }

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
    const outcome = { how: 'live' as const, ...(await pivotWhenStorageReady(this.vm, this.device, this.where.diskPath, await this.#placeMetadata())) };
    const filled = request.fill ? this.#fill(request) : Promise.resolve(false);
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

  async #fill(request: PivotRequest): Promise<boolean> {
    try {
      await this.vm.fill(request.fillRate, { giveUpAfterMs: request.fillOutageMs });
    } catch (error) {
      if (!this.vm.lifecycle.isFinal && this.vm.state !== 'stopping') this.where.log?.((error as Error).message);
      return false;
    }
    // QEMU alone has the disk now: the COR device leaves (once no snapshot uses its map); the disk
    // stays locked until the fold.
    const users = [...this.#mapUsers];
    this.#leaving = (async () => {
      await Promise.allSettled(users);
      this.onDeviceLeaving();
      this.#deviceLeft = true;
      await this.device.close();
      this.#heldLock = await lockDisk(this.where.diskPath);
    })();
    await this.#leaving;
    return true;
  }

  /** Runs holding the device's map open (a native snapshot), if it is still open: see withMap. */
  readonly #mapUsers = new Set<Promise<unknown>>();

  /**
   * Runs `use` with the disk's map: the COR device's own while it is open (it stays open until
   * `use` settles), else undefined once the device has left after the fill (the caller opens the
   * map file itself: the device closed it, and nobody else opens it before QEMU exits).
   */
  async withMap<T>(use: (deviceMap: boolean) => Promise<T>): Promise<T> {
    if (this.#leaving) await this.#leaving.catch(() => undefined);
    const running = use(!this.#deviceLeft);
    if (this.#deviceLeft) return running;
    this.#mapUsers.add(running);
    try {
      return await running;
    } finally {
      this.#mapUsers.delete(running);
    }
  }

  /** After QEMU has exited and the COR device closed: QEMU's writes and allocation into the map. */
  async afterQemuExit(): Promise<FoldResult | undefined> {
    await this.#leaving?.catch(() => undefined);
    const metadataPath = this.#metadataPath;
    if (!this.#vm) {
      // QEMU never started on a graph prepared for it: nothing of it to record.
      if (metadataPath) await rm(metadataPath, { force: true });
      return undefined;
    }
    if (!this.vm.isNative || !metadataPath) return undefined;
    const folded = await foldNativeIntoMap({ disk: this.where.diskPath, metadataPath, manifest: this.device.manifest, heldLock: this.#heldLock });
    this.#heldLock = undefined;
    await rm(metadataPath, { force: true }); // recorded: nothing left to recover
    this.where.log?.(`after the pivot: ${folded.newlyPresent} blocks made present (streamed by QEMU, or zero blocks mapped to the disk), ${folded.written} written by the guest (from the ${folded.writesFrom === 'bitmap' ? 'writes bitmap' : 'manifest digests'}), recorded in the map`);
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
