// `lazyboot boot --json`: the boot's milestones and the fill's progress as JSON lines on stdout, in
// place of the human lines and the text summary, for scripts that watch a boot. Every object has
// `event` and `t` (milliseconds since the start), as in `run --json` (run-events.ts). Events:
// control (the VM's name and socket), accelerator, qemu-up, storage-ready, boot-complete, agent-up,
// pivot, fill-progress (each poll of the block job), fill-paused / fill-stalled / fill-resumed (a
// repository outage during the fill), fill-complete, fill-failed, disk-error,
// error (a failure, before the summary), summary (always last).
import type { LazyVm, VmEvent } from '../launch.js';
import type { JsonLine, RunEventLog } from './run-events.js';

/** The boot's own lines; accelerator, qemu-up and agent-up are mapped as in `run --json`. */
export function followBootAsJson(vm: LazyVm, log: RunEventLog): void {
  let lastFill = -1;
  log.followVm(vm, (event): JsonLine | null | undefined => {
    switch (event.type) {
      case 'storage-ready':
        return ['storage-ready', { source: event.source, root: event.root, disk: event.disk, driver: event.driver, fetchedBytes: vm.stats().fetchedBytes }];
      case 'guest-event':
        return event.event.event === 'boot-complete' ? ['boot-complete'] : null;
      case 'pivot':
        return ['pivot', { pauseMs: Number(event.pauseMs.toFixed(1)), drainMs: Number(event.drainMs.toFixed(1)) }];
      case 'native-boot':
        return ['native-boot'];
      case 'fill-progress':
        // The job is polled each second; a poll that saw no progress is not worth a line.
        if (event.offset === lastFill) return null;
        lastFill = event.offset;
        return ['fill-progress', { offset: event.offset, len: event.len }];
      case 'fill-complete':
        return ['fill-complete'];
      case 'fill-failed':
        return ['fill-failed', { message: event.message }];
      case 'fill-paused':
        return ['fill-paused', { message: event.message }];
      case 'fill-stalled':
        return ['fill-stalled', { message: event.message, stalledMs: event.stalledMs }];
      case 'fill-resumed':
        return ['fill-resumed', { pausedMs: event.pausedMs }];
      case 'qmp-event':
        return event.event.event === 'BLOCK_IO_ERROR' ? ['disk-error', { data: event.event.data }] : null;
      default:
        return undefined;
    }
  });
}

/** The last line: how the boot ended and what the disk holds (the same facts as the text summary). */
export function emitBootSummary(vm: LazyVm, log: RunEventLog, temporaryDisk: boolean): void {
  const stats = vm.stats();
  const pivot = vm.events.history.find((e): e is Extract<VmEvent, { type: 'pivot' }> => e.type === 'pivot');
  if (vm.failure) log.emit('error', { name: vm.failure.name, message: vm.failure.message });
  log.emit('summary', {
    image: vm.image,
    state: vm.state,
    storageReady: vm.storageReadySource ?? null,
    pivotPauseMs: pivot ? Number(pivot.pauseMs.toFixed(1)) : null,
    fill: vm.status().fill,
    fetchedBytes: stats.fetchedBytes,
    imageBytes: vm.imageBytes,
    presentBlocks: vm.folded?.presentBlocks ?? stats.presentBlocks,
    modifiedBlocks: vm.folded?.modifiedBlocks ?? stats.modifiedBlocks,
    totalBlocks: stats.totalBlocks,
    disk: temporaryDisk ? null : vm.diskPath,
  });
}
