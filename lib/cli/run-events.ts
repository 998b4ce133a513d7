// `lazyboot run --json`: one JSON object per line on a file descriptor the user chooses
// (`--json-fd 3 3>events.ndjson`), so a harness reads lazyboot's events while the command's own
// output stays on stdout/stderr. Every object has `event` and `t` (milliseconds since the start).
// Events: accelerator, qemu-up, guest (the guest's own events, e.g. storage-ready), agent-up,
// fetch-progress (each second while bytes move), copied, command-started, command-exited,
// command-timed-out, command-not-started, error, summary (always last).
import { fstatSync, writeSync } from 'node:fs';
import { UsageError } from '../base/errors.js';
import type { LazyVm, VmEvent } from '../launch.js';

const PROGRESS_EVERY_MS = 1000;

/** One JSON line: the event's name and its fields (`event` and `t` are added). */
export type JsonLine = readonly [event: string, fields?: Record<string, unknown>];

/** The VM events `run --json` and `boot --json` report alike; undefined for the others. */
function sharedJsonLine(event: VmEvent): JsonLine | undefined {
  switch (event.type) {
    case 'accelerator':
      return ['accelerator', { accel: event.accel, reason: event.reason }];
    case 'qemu-up':
      return ['qemu-up', { pid: event.pid }];
    case 'agent-up':
      return ['agent-up'];
    default:
      return undefined;
  }
}

export class RunEventLog {
  readonly #startedAt = Date.now();
  #progressTimer: NodeJS.Timeout | undefined;

  private constructor(private readonly fd: number | undefined) {}

  /** A log writing to `fd`, or one that writes nothing; refuses a descriptor that is not open. */
  static open(enabled: boolean, fd: number): RunEventLog {
    if (!enabled) return new RunEventLog(undefined);
    if (!Number.isInteger(fd) || fd < 0) throw new UsageError(`invalid --json-fd ${fd}`, 'give a file descriptor number, e.g. --json-fd 3 3>events.ndjson');
    // Node's own descriptors (epoll, eventfd) are open too but no place to write: only files, pipes, sockets, ttys.
    let usable = false;
    try {
      const info = fstatSync(fd);
      usable = info.isFile() || info.isFIFO() || info.isSocket() || info.isCharacterDevice();
    } catch {
      usable = false;
    }
    if (!usable) throw new UsageError(`--json-fd ${fd} is not open`, `open it in the shell, e.g. lazyboot run --json --json-fd ${fd} IMAGE -- CMD ${fd}>events.ndjson`);
    return new RunEventLog(fd);
  }

  get enabled(): boolean {
    return this.fd !== undefined;
  }

  elapsedMs(): number {
    return Date.now() - this.#startedAt;
  }

  emit(event: string, fields: Record<string, unknown> = {}): void {
    if (this.fd === undefined) return;
    writeSync(this.fd, `${JSON.stringify({ event, t: this.elapsedMs(), ...fields })}\n`);
  }

  /**
   * The VM's events so far and from now on as JSON lines: `ownLine` maps what one command reports
   * its own way (undefined: the shared mapping, null: no line).
   */
  followVm(vm: LazyVm, ownLine: (event: VmEvent) => JsonLine | null | undefined): void {
    if (this.fd === undefined) return;
    const onEvent = (event: VmEvent): void => {
      const line = ownLine(event);
      const chosen = line === undefined ? sharedJsonLine(event) : line;
      if (chosen) this.emit(chosen[0], chosen[1]);
    };
    for (const event of vm.events.history) onEvent(event);
    vm.events.on(onEvent);
  }

  /** Milestones as they happen, and fetch progress each second while the disk fills, until teardown. */
  follow(vm: LazyVm): void {
    if (this.fd === undefined) return;
    this.followVm(vm, (event) => {
      if (event.type === 'guest-event') return ['guest', { guestEvent: event.event }];
      if (event.type === 'torn-down') clearInterval(this.#progressTimer);
      return undefined;
    });
    let lastFetched = -1;
    this.#progressTimer = setInterval(() => {
      const stats = vm.stats();
      if (stats.fetchedBytes === lastFetched) return;
      lastFetched = stats.fetchedBytes;
      this.emit('fetch-progress', { fetchedBytes: stats.fetchedBytes, imageBytes: vm.imageBytes, presentBlocks: stats.presentBlocks, totalBlocks: stats.totalBlocks });
    }, PROGRESS_EVERY_MS);
    this.#progressTimer.unref();
  }

  stop(): void {
    clearInterval(this.#progressTimer);
  }
}
