// The public face, used the way a CI harness uses it: this file imports lazyboot only by its
// package name ('lazyboot' and its subpath exports, resolved through package.json "exports"), plus
// the test image builder. The root's runtime names are pinned: a name added or lost is a decision.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { withDir } from 'tmp-promise';
import * as lazyboot from 'lazyboot';
import { LazybootError, Repository, UnknownImage, launch, openCorDevice } from 'lazyboot';
import { NbdClient } from 'lazyboot/nbd';
import { QmpClient, TransientVm } from 'lazyboot/vmm';
import { GuestAgent, GuestEvents } from 'lazyboot/guest';
import { BlockMap, decodeManifest } from 'lazyboot/block';
import { RepositoryWriter, openWriteTarget, startWriteServer } from 'lazyboot/write';
import { ensureFixture } from '../fixtures/build.js';

const ROOT_NAMES = [
  // What a harness calls.
  'launch', 'openCorDevice', 'Repository', 'snapshot', 'replicate', 'VM_DEFAULTS', 'installSignalTeardown', 'teardownOnUncaughtException', 'tuneProcess',
  // What it may catch.
  'LazybootError', 'UsageError', 'FileSystemFailed', 'BlockError',
  'QmpError', 'QmpConnectionClosed', 'QmpTimeout', 'QemuNotFound', 'QemuExited', 'KvmUnavailable', 'IllegalVmAction', 'GuestDiskError', 'BootTimeout', 'VmEndedEarly', 'StorageReadinessUnknown', 'GuestBootFailed', 'GuestPanicked',
  'CommandNotStarted', 'GuestStreamsMissing', 'CopyFailed', 'StreamPortClosed',
  // What launch() with the pivot may throw or report (vmm/errors.ts).
  'PivotFailed', 'FillJobFailed', 'ClusterSizeUnsupported', 'Qcow2MetadataError',
  'AgentTimeout', 'AgentCommandFailed', 'AgentDisconnected', 'GuestEventTimeout', 'GuestEventsClosed', 'NativeStorageTimeout', 'GuestEventRejected',
  'DiskSizeMismatch', 'DiskMissing', 'DiskNotADisk', 'DiskNotBound', 'FillFailed', 'DiskIoFailed', 'DiskInUse', 'DiskDirectoryMissing',
  'RepositoryUnreachable', 'DigestMismatch', 'FetchTimeout', 'FetchWorkerFailed', 'MapMismatch', 'MapCorrupt',
  'UnknownImage', 'InvalidImageName', 'InvalidBlockSize', 'RepositoryCorrupt', 'BlockMissing', 'BlockCorrupt', 'ImportFailed', 'ExportFailed', 'UnsafeImage',
  'NotARepository', 'RepositoryDamaged', 'UnknownParent', 'ImageShapeMismatch', 'BlockDigestMismatch', 'VersionConflict', 'MalformedWriteRequest', 'InvalidManifest', 'StoreUnavailable',
  'NbdConnectError', 'NbdListenFailed', 'TlsCredentialsInvalid',
  'MapTargetsFull', 'SnapshotNoMap', 'SnapshotNeedsFullDisk', 'SnapshotBaselineChanged', 'SnapshotInterrupted', 'SendingSetCorrupt', 'ReplicateNoMap', 'ReplicateOptionInvalid', 'SnapshotNotTaken',
  'LiveSnapshotAfterPivot', 'LiveSnapshotDuringPivot', 'LiveSnapshotBusy', 'GuestFreezeFailed', 'GuestThawFailed',
  'WriteTargetUnreachable', 'WriteRefused',
];

test('the root exports what a harness needs, and nothing else', (t) => {
  t.deepEqual(Object.keys(lazyboot).sort(), [...ROOT_NAMES].sort());
});

test('every error class of the root derives from LazybootError (one error tree)', (t) => {
  const classes = Object.entries(lazyboot as Record<string, unknown>)
    .filter((entry): entry is [string, abstract new (...args: never[]) => Error] => typeof entry[1] === 'function' && (entry[1] as { prototype?: unknown }).prototype instanceof Error);
  t.true(classes.length > 40);
  for (const [name, value] of classes) t.true(value === LazybootError || value.prototype instanceof LazybootError, name);
});

test('the subpath exports hold the parts\' own APIs', (t) => {
  for (const value of [NbdClient, QmpClient, TransientVm, GuestAgent, GuestEvents, BlockMap, decodeManifest, RepositoryWriter, openWriteTarget, startWriteServer]) t.is(typeof value, 'function');
  t.false('NbdClient' in lazyboot, 'the NBD client is not in the root');
});

test('a repository, a copy-on-read device over it and an NBD client, from the public face only', (t) => withDir(async ({ path: dir }) => {
  const content = Buffer.alloc(8 * 65536);
  for (let i = 0; i < content.length; i += 4) content.writeUInt32BE((i * 2654435761) >>> 0, i);
  const repo = await Repository.open(join(dir, 'repo'));
  try {
    async function* chunks() { yield content; }
    await repo.importImage('demo', chunks(), { size: content.length, blockSize: 65536 });
  } finally {
    await repo.close();
  }
  const device = await openCorDevice({ image: 'demo', from: [join(dir, 'repo')], disk: join(dir, 'disk.raw') });
  try {
    const client = await NbdClient.connect(device.uri);
    try {
      t.true((await client.read(65536, 2 * 65536)).equals(content.subarray(65536, 3 * 65536)));
    } finally {
      await client.close();
    }
  } finally {
    await device.close();
  }
  t.is((await stat(join(dir, 'disk.raw'))).size, content.length);
  const unknown = await t.throwsAsync(launch({ image: 'nope', from: [join(dir, 'repo')] }), { instanceOf: UnknownImage });
  t.true(unknown instanceof LazybootError);
}, { unsafeCleanup: true }));

test('launch() boots the tiny image lazily and tears down when it powers off', async (t) => {
  t.timeout(240_000); // a TCG boot on a loaded shared machine; ~5 s when quiet
  const tiny = await ensureFixture('tiny');
  await withDir(async ({ path: dir }) => {
    const repo = await Repository.open(join(dir, 'repo'));
    try {
      await repo.importImage('tiny', createReadStream(tiny.path), { size: (await stat(tiny.path)).size });
    } finally {
      await repo.close();
    }
    const vm = await launch({ image: 'tiny', from: [join(dir, 'repo')], accel: 'tcg', memoryMiB: 256, timeoutMs: 180_000 });
    try {
      await vm.storageReady;
      await vm.closed; // the tiny guest powers itself off after boot-complete
      t.is(vm.state, 'stopped', String(vm.failure));
      const stats = vm.stats();
      t.true(stats.fetchedBytes > 0 && stats.fetchedBytes < vm.imageBytes, `fetched ${stats.fetchedBytes} of ${vm.imageBytes}`);
    } finally {
      await vm.close();
    }
  }, { unsafeCleanup: true });
});
