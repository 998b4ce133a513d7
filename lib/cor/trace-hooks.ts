// The boot trace's hooks in the copy-on-read device's guest path: the recorder of the guest's
// first reads (trace-recorder.ts) and the replay fetching a stored trace ahead of the guest
// (trace-replay.ts), at most one of each. boot-tracing.ts decides when to start and stop them.
import type { BootTrace } from '../trace/trace-format.js';
import { TraceRecorder, type TraceRecorderOptions } from './trace-recorder.js';
import { TraceReplay, type TraceReplayOptions, type TraceReplayParts } from './trace-replay.js';

export class TraceHooks {
  private recorder: TraceRecorder | undefined;
  private replay: TraceReplay | undefined;

  /** What a replay needs of the device (the recorder takes blockCount and dataBytes of it). */
  constructor(private readonly parts: TraceReplayParts) {}

  /** The guest read blocks [first, last]. */
  guestRead(first: number, last: number): void {
    this.recorder?.guestRead(first, last);
    this.replay?.guestRead(first, last);
  }

  /** A partial write of `block` needs its image content: recorded as a read (the replay ignores it). */
  partialWrite(block: number): void {
    this.recorder?.guestRead(block, block);
  }

  /** The guest overwrote blocks [first, last] (the recorder leaves out blocks written before read). */
  written(first: number, last: number): void {
    this.recorder?.written(first, last);
  }

  /** Records the guest's first reads from now on. */
  startRecording(options: Partial<TraceRecorderOptions> = {}): TraceRecorder {
    this.recorder = new TraceRecorder({ blockCount: this.parts.blockCount, dataBytes: this.parts.dataBytes, ...options });
    return this.recorder;
  }

  /** Fetches `trace`'s blocks ahead of the guest, below its own fetches; a running replay stops. */
  startReplay(trace: BootTrace, options: TraceReplayOptions = {}): TraceReplay {
    this.replay?.stop();
    const replay = new TraceReplay(trace, this.parts, options);
    this.replay = replay;
    replay.start();
    return replay;
  }

  /** Stops the replay, if any (it stores what it fetches: not after the pivot, not after close). */
  stopReplay(): void {
    this.replay?.stop();
  }
}
