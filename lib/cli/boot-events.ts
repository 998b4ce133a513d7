// `lazyboot boot --json`: the boot's milestones and the fill's progress as JSON lines on stdout, in
// place of the human lines and the text summary, for scripts that watch a boot. Every object has
// `event` and `t` (milliseconds since the start), as in `run --json` (run-events.ts). Events:
// control (the VM's name and socket), accelerator, qemu-up, storage-ready, boot-complete, agent-up,
// pivot, fill-progress (each poll of the block job), fill-paused / fill-stalled / fill-resumed (a
// repository outage during the fill), fill-complete, fill-failed, disk-error,
// error (a failure, before the summary), summary (always last).
import type { LazyVm, VmEvent } from '../launch.js';
import type { RunEventLog } from './run-events.js';

export function followBootAsJson(vm: LazyVm, log: RunEventLog): void {
  let lastFill = -1;
  const onEvent = (event: VmEvent) => {
    switch (event.type) {
      case 'accelerator':
        return log.emit('accelerator', { accel: event.accel, reason: event.reason });
      case 'qemu-up':
        return log.emit('qemu-up', { pid: event.pid });
      case 'storage-ready':
        return log.emit('storage-ready', { source: event.source, root: event.root, disk: event.disk, driver: event.driver, fetchedBytes: vm.stats().fetchedBytes });
      case 'guest-event':
        if (event.event.event === 'boot-complete') log.emit('boot-complete');
        return;
      case 'agent-up':
        return log.emit('agent-up');
      case 'pivot':
        return log.emit('pivot', { pauseMs: Number(event.pauseMs.toFixed(1)), drainMs: Number(event.drainMs.toFixed(1)) });
      case 'native-boot':
        return log.emit('native-boot');
      case 'fill-progress':
        // The job is polled each second; a poll that saw no progress is not worth a line.
        if (event.offset === lastFill) return;
        lastFill = event.offset;
        return log.emit('fill-progress', { offset: event.offset, len: event.len });
      case 'fill-complete':
        return log.emit('fill-complete');
      case 'fill-failed':
        return log.emit('fill-failed', { message: event.message });
      case 'fill-paused':
        return log.emit('fill-paused', { message: event.message });
      case 'fill-stalled':
        return log.emit('fill-stalled', { message: event.message, stalledMs: event.stalledMs });
      case 'fill-resumed':
        return log.emit('fill-resumed', { pausedMs: event.pausedMs });
      case 'qmp-event':
        if (event.event.event === 'BLOCK_IO_ERROR') log.emit('disk-error', { data: event.event.data });
        return;
    }
  };
  for (const event of vm.events.history) onEvent(event);
  vm.events.on(onEvent);
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
