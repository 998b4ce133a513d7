// The transient VM's lifecycle as one typed state machine:
//   starting → booting → storage-ready → running → stopping → stopped | failed
// fed by what happens (QEMU up, guest events, QMP events, process exit). Actions a state does not
// allow are refused with IllegalVmAction, never half-done.
import { IllegalVmAction } from './errors.js';

export type VmState = 'starting' | 'booting' | 'storage-ready' | 'running' | 'stopping' | 'stopped' | 'failed';

export type VmInput =
  | { readonly type: 'qemu-up' }
  | { readonly type: 'storage-ready' }
  /** The guest agent answered, or the guest said boot-complete: userspace is up. */
  | { readonly type: 'guest-up' }
  /** Someone (host or guest: QMP SHUTDOWN) began to stop the VM. */
  | { readonly type: 'stop' }
  | { readonly type: 'qemu-exited' }
  | { readonly type: 'failure'; readonly error: Error };

export type VmAction = 'exec' | 'wait-ready' | 'stop' | 'pivot';

/** The state each input leads to from each state; absent = the input does not move this state. */
const TRANSITIONS: Record<VmState, Partial<Record<VmInput['type'], VmState>>> = {
  starting: { 'qemu-up': 'booting', stop: 'stopping', 'qemu-exited': 'failed', failure: 'failed' },
  booting: { 'storage-ready': 'storage-ready', 'guest-up': 'running', stop: 'stopping', 'qemu-exited': 'failed', failure: 'failed' },
  'storage-ready': { 'guest-up': 'running', stop: 'stopping', 'qemu-exited': 'failed', failure: 'failed' },
  running: { stop: 'stopping', 'qemu-exited': 'stopped', failure: 'failed' },
  // While stopping, the process exit is the expected end; a failure seen now is still a failure.
  stopping: { 'qemu-exited': 'stopped', failure: 'failed' },
  stopped: {},
  failed: {},
};

const ALLOWED: Record<VmAction, readonly VmState[]> = {
  exec: ['running'],
  'wait-ready': ['starting', 'booting', 'storage-ready', 'running'],
  pivot: ['storage-ready', 'running'],
  stop: ['starting', 'booting', 'storage-ready', 'running', 'stopping', 'stopped', 'failed'],
};

export interface VmTransition {
  readonly from: VmState;
  readonly to: VmState;
  readonly input: VmInput;
  /** Milliseconds since the machine was created. */
  readonly atMs: number;
}

export class VmLifecycle {
  #state: VmState = 'starting';
  #failure: Error | undefined;
  #stopWasRequested = false;
  readonly #startedAt = Date.now();
  readonly #listeners = new Set<(transition: VmTransition) => void>();
  readonly history: VmTransition[] = [];

  get state(): VmState {
    return this.#state;
  }

  /** The error that moved the VM to `failed`, if it did. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  get isFinal(): boolean {
    return this.#state === 'stopped' || this.#state === 'failed';
  }

  /** Feeds one input; returns the new state (unchanged if the input does not apply here). */
  feed(input: VmInput): VmState {
    if (input.type === 'stop') this.#stopWasRequested = true;
    // QEMU exiting before anyone (host or guest) asked it to stop is a failure.
    const next = input.type === 'qemu-exited' && !this.#stopWasRequested ? 'failed' : TRANSITIONS[this.#state][input.type];
    if (!next || next === this.#state) return this.#state;
    if (next === 'failed') this.#failure ??= input.type === 'failure' ? input.error : undefined;
    const transition: VmTransition = { from: this.#state, to: next, input, atMs: Date.now() - this.#startedAt };
    this.#state = next;
    this.history.push(transition);
    for (const listener of [...this.#listeners]) listener(transition);
    return next;
  }

  /** Throws IllegalVmAction unless `action` is allowed in the current state. */
  assertAllowed(action: VmAction): void {
    if (!ALLOWED[action].includes(this.#state)) throw new IllegalVmAction(action, this.#state);
  }

  onTransition(listener: (transition: VmTransition) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Resolves when the VM reaches one of `states`; rejects if it ends (stopped/failed) first. */
  waitFor(states: readonly VmState[], onEnd: (state: VmState) => Error): Promise<VmState> {
    if (states.includes(this.#state)) return Promise.resolve(this.#state);
    if (this.isFinal) return Promise.reject(onEnd(this.#state));
    return new Promise((resolve, reject) => {
      const stop = this.onTransition(({ to }) => {
        if (states.includes(to)) {
          stop();
          resolve(to);
        } else if (to === 'stopped' || to === 'failed') {
          stop();
          reject(onEnd(to));
        }
      });
    });
  }
}
