// The native block graph a VM pivots to, as QMP blockdev-add arguments, and the live swap:
//   copy-on-read filter (TOP) → qcow2 metadata file (NATIVE) ─ data-file → the local raw disk (DATA)
//                                                            └ backing   → NBD to the COR device (BACKING)
// QEMU's own block layer then serves the guest; unallocated clusters read from the COR device
// (read-through: it stores nothing), and QEMU's copy-on-read writes them at their own offsets.
import { DISK_DEVICE, DISK_NODE } from './qemu-args.js';
import type { QmpClient } from './qmp.js';
import { PivotFailed } from './errors.js';

export const NATIVE_TOP_NODE = 'lazyboot-native-top';
export const NATIVE_NODE = 'lazyboot-native';
export const NATIVE_DATA_NODE = 'lazyboot-native-data';
export const NATIVE_BACKING_NODE = 'lazyboot-native-backing';
/** Persistent dirty bitmap on NATIVE: the guest's writes after the pivot (QEMU's own COR and stream writes do not mark it). */
export const WRITES_BITMAP = 'lazyboot-writes';

export interface NativeGraph {
  /** The qcow2 metadata file (vmm/qcow2-metadata.ts), its L2 entries final. */
  readonly metadataPath: string;
  /** The local raw disk (the qcow2's external data file). */
  readonly dataPath: string;
  readonly dataIsBlockDevice: boolean;
  /** The image's block size: the writes bitmap's granularity, so a dirty bit is a block. */
  readonly blockSize: number;
  /** The COR device's NBD export (read-through by then). */
  readonly backing: { readonly socketPath: string; readonly exportName: string };
}

/** blockdev-add arguments, children first. */
export function nativeGraphNodes(graph: NativeGraph): Record<string, unknown>[] {
  return [
    { driver: graph.dataIsBlockDevice ? 'host_device' : 'file', 'node-name': NATIVE_DATA_NODE, filename: graph.dataPath },
    {
      driver: 'nbd',
      'node-name': NATIVE_BACKING_NODE,
      server: { type: 'unix', path: graph.backing.socketPath },
      export: graph.backing.exportName,
      'read-only': true,
      // A short outage of the COR device's socket is waited out, not failed at once.
      'reconnect-delay': 10,
    },
    {
      driver: 'qcow2',
      'node-name': NATIVE_NODE,
      file: { driver: 'file', filename: graph.metadataPath },
      'data-file': NATIVE_DATA_NODE,
      backing: NATIVE_BACKING_NODE,
      // Guest discards reach the raw disk (and the dirty bitmap records them).
      discard: 'unmap',
    },
    { driver: 'copy-on-read', 'node-name': NATIVE_TOP_NODE, file: NATIVE_NODE },
  ];
}

/**
 * The graph as QEMU's disk at start (a reboot pivot, a resumed one): the same nodes, the top one
 * named DISK_NODE so the disk device takes it. The writes bitmap is added over QMP before `cont`.
 */
export function nativeBootSpec(graph: NativeGraph): { readonly kind: 'blockdev'; readonly nodes: Record<string, unknown>[] } {
  const nodes = nativeGraphNodes(graph);
  const top = nodes[nodes.length - 1]!;
  return { kind: 'blockdev', nodes: [...nodes.slice(0, -1), { ...top, 'node-name': DISK_NODE }] };
}

interface NamedNode {
  readonly 'node-name': string;
  readonly image: { readonly 'virtual-size': number };
}

async function step<T>(name: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw error instanceof PivotFailed ? error : new PivotFailed(name, (error as Error).message);
  }
}

export interface LivePivotResult {
  /** Time the guest's vCPUs were stopped, in ms. */
  readonly pauseMs: number;
  /** Of it, draining and switching the COR device and finishing the metadata. */
  readonly drainMs: number;
}

/**
 * stop → `whilePaused` (drain the COR device to read-through, finish the metadata file) →
 * blockdev-add the graph → the writes bitmap → sizes checked → qom-set the device's drive to TOP
 * (never when it is already TOP: that aborts QEMU) → cont, then blockdev-del the old disk node.
 * The VM is resumed whatever happens; a failure after `whilePaused` leaves a guest whose old disk
 * refuses writes, so the caller ends the VM.
 */
export async function livePivot(qmp: QmpClient, graph: NativeGraph, whilePaused: () => Promise<void>): Promise<LivePivotResult> {
  const [data, backing, qcow2, top] = nativeGraphNodes(graph);
  // Before the pause: what does not depend on the final metadata (the raw disk's node, the NBD
  // connection to the COR device), and what the swap must check (the device's node and its size).
  const device = `/machine/peripheral/${DISK_DEVICE}`;
  const attached = await step('qom-get drive', () => qmp.execute<string>('qom-get', { path: device, property: 'drive' }));
  // Setting the node a device already has aborts QEMU (an assertion): never try.
  if (attached === NATIVE_TOP_NODE) throw new PivotFailed('qom-set drive', 'the device already has the native graph');
  const oldSize = sizeOf(await step('query-named-block-nodes', () => qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true })), DISK_NODE);
  for (const node of [data!, backing!]) await step(`blockdev-add ${String(node['node-name'])}`, () => qmp.execute('blockdev-add', node));
  const stoppedAt = performance.now();
  await step('stop', () => qmp.execute('stop'));
  let drainMs = 0;
  try {
    await step('draining the copy-on-read device', whilePaused);
    drainMs = performance.now() - stoppedAt;
    for (const node of [qcow2!, top!]) await step(`blockdev-add ${String(node['node-name'])}`, () => qmp.execute('blockdev-add', node));
    await step('block-dirty-bitmap-add', () => qmp.execute('block-dirty-bitmap-add', { node: NATIVE_NODE, name: WRITES_BITMAP, persistent: true, granularity: graph.blockSize }));
    const newSize = sizeOf(await step('query-named-block-nodes', () => qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true })), NATIVE_TOP_NODE);
    // QEMU 7.2 does not compare sizes on this swap: a wrong size would reach the guest unnoticed.
    if (oldSize === undefined || oldSize !== newSize) throw new PivotFailed('the size check', `the native graph has ${newSize} bytes, the guest's disk ${oldSize}`);
    await step('qom-set drive', () => qmp.execute('qom-set', { path: device, property: 'drive', value: NATIVE_TOP_NODE }));
  } finally {
    await qmp.execute('cont').catch(() => undefined);
  }
  const pauseMs = performance.now() - stoppedAt;
  // The old path (raw over NBD to the COR device) has no parent now: its connection closes.
  await step('blockdev-del of the transient disk', () => qmp.execute('blockdev-del', { 'node-name': DISK_NODE }));
  return { pauseMs, drainMs };
}

function sizeOf(nodes: readonly NamedNode[], name: string): number | undefined {
  return nodes.find((node) => node['node-name'] === name)?.image['virtual-size'];
}
