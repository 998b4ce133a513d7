// The transient VM's readiness wiring: who tells that the guest's own storage driver has the disk
// (the image's lazyboot hooks on the events port, else qemu-guest-agent's view of `/`) and that
// the guest is up (agent answered, or boot-complete without an agent), and the guest's own report
// of a failed boot. TransientVm owns the lifecycle; this part feeds it what the guest says.
import { GuestEvents, type GuestEvent } from '../guest/events.js';
import { GuestBootFailed } from './errors.js';
import { connectGuestAgent, type GuestAgentLink } from './guest-agent-link.js';
import type { VmLifecycle } from './lifecycle.js';

/** Who said the guest's storage driver is up: the image's lazyboot hooks, or qemu-guest-agent (any image that runs it). */
export type StorageReadySource = 'hook' | 'agent';

/** The VM events this part emits (a subset of VmEvent, vm.ts). */
export type ReadinessEvent =
  | { readonly type: 'guest-event'; readonly event: GuestEvent; readonly atMs: number }
  | { readonly type: 'agent-up'; readonly atMs: number }
  /** The guest's own storage driver has the disk: said by our hooks (events port) or learnt through qemu-guest-agent. */
  | { readonly type: 'storage-ready'; readonly source: StorageReadySource; readonly root: string; readonly disk?: string; readonly driver?: string; readonly atMs: number };

/** How long the agent fallback asks guest-get-fsinfo before concluding `/` is not on a native disk. */
const AGENT_READINESS_TIMEOUT_MS = 30_000;
/** Longest delay a Node timer takes (a larger one fires at once): "no limit" for the agent wait. */
const NO_TIME_LIMIT_MS = 2 ** 31 - 1;

export interface ReadinessHooks {
  readonly lifecycle: VmLifecycle;
  /** Aborted at teardown: every wait here ends then. */
  readonly signal: AbortSignal;
  /** The VM's `agent` option: true = required, 'optional', false = none. */
  readonly agent: boolean | 'optional';
  /** The boot timeout (0 = none): how long the agent may take to answer. */
  readonly timeoutMs: number;
  readonly emit: (event: ReadinessEvent) => void;
  readonly elapsedMs: () => number;
  readonly fail: (error: Error) => void;
  /** The agent answered: exec and file copies go through it from now on. */
  readonly agentConnected: (agent: GuestAgentLink) => void;
}

export class GuestReadiness {
  #source: StorageReadySource | undefined;
  #guestEvents: GuestEvents | undefined;

  constructor(private readonly hooks: ReadinessHooks) {}

  /** Who said storage-ready (undefined until someone did). */
  get source(): StorageReadySource | undefined {
    return this.#source;
  }

  /** QEMU has created the events socket by now; a guest's write blocks until we connect, so connect at once. */
  async listenToGuest(socketPath: string): Promise<void> {
    const { signal } = this.hooks;
    try {
      const events = await GuestEvents.connect(socketPath, { signal });
      if (signal.aborted) return events.close();
      this.#guestEvents = events;
      events.on('event', (event) => this.#onGuestEvent(event));
      for (const event of events.received) this.#onGuestEvent(event);
    } catch {
      // Torn down before the socket answered, or QEMU died: the process exit tells the lifecycle.
    }
  }

  async connectAgent(socketPath: string): Promise<void> {
    const { signal } = this.hooks;
    try {
      const agent = await connectGuestAgent(socketPath, { signal, timeoutMs: this.hooks.timeoutMs || NO_TIME_LIMIT_MS });
      if (signal.aborted) return void (await agent.close());
      this.hooks.agentConnected(agent);
      this.hooks.emit({ type: 'agent-up', atMs: this.hooks.elapsedMs() });
      // An image without our hooks: the agent tells whether `/` is on a disk of the guest's own driver.
      if (!this.#source) await this.#askAgentForStorage(agent);
      this.hooks.lifecycle.feed({ type: 'guest-up' });
    } catch (error) {
      // An optional agent that never shows up is not a failure: the image may have none.
      if (!signal.aborted && this.hooks.agent === true) this.hooks.fail(error as Error);
    }
  }

  close(): void {
    this.#guestEvents?.close();
  }

  async #askAgentForStorage(agent: GuestAgentLink): Promise<void> {
    try {
      const ready = await agent.nativeStorage({ timeoutMs: AGENT_READINESS_TIMEOUT_MS, signal: this.hooks.signal });
      this.#storageReadyFrom('agent', { root: ready.root });
    } catch {
      // `/` not on a native disk (or torn down meanwhile): no storage-ready; storageReady says so.
    }
  }

  /** The first source to say storage-ready wins; later ones change nothing. */
  #storageReadyFrom(source: StorageReadySource, where: { root: string; disk?: string; driver?: string }): void {
    if (this.#source || this.hooks.lifecycle.isFinal) return;
    this.#source = source;
    this.hooks.emit({ type: 'storage-ready', source, ...where, atMs: this.hooks.elapsedMs() });
    this.hooks.lifecycle.feed({ type: 'storage-ready' });
  }

  #onGuestEvent(event: GuestEvent): void {
    this.hooks.emit({ type: 'guest-event', event, atMs: this.hooks.elapsedMs() });
    if (event.event === 'storage-ready') this.#storageReadyFrom('hook', { root: String(event.root ?? '?'), disk: event.disk, driver: event.driver });
    else if (event.event === 'boot-complete' && this.hooks.agent !== true) this.hooks.lifecycle.feed({ type: 'guest-up' });
    else if (event.event === 'boot-failed') this.hooks.fail(new GuestBootFailed(String(event.reason ?? 'no reason given')));
  }
}
