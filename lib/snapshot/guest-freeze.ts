// The guest's side of a live snapshot's instant: its file systems frozen through its agent
// (guest-fsfreeze-freeze) around one step, timed, and thawed at once, also when the step fails.
// Shared by the snapshot before the pivot (live-snapshot.ts) and after it (native-snapshot.ts).
import { performance } from 'node:perf_hooks';
import { GuestFreezeFailed, GuestThawFailed } from './errors.js';

/** The guest's file systems, frozen and thawed through its agent; each call answers how many. */
export interface GuestFreezer {
  freeze(): Promise<number>;
  thaw(): Promise<number>;
}

export interface FreezeTiming {
  /** File systems the agent froze (0 without a freezer). */
  frozenFilesystems: number;
  /** From the freeze's answer to the thaw's answer. */
  frozenMs: number;
  /** How long the freeze request itself took (the guest syncs its file systems first). */
  freezeMs: number;
}

/** Runs `step` with the guest's file systems frozen (without a freezer: just runs it). */
export async function whileFrozen(freezer: GuestFreezer | undefined, timing: FreezeTiming, step: () => Promise<void>): Promise<void> {
  if (!freezer) return step();
  const freezeStart = performance.now();
  try {
    timing.frozenFilesystems = await freezer.freeze();
  } catch (error) {
    // A freeze that failed half-way may have frozen some: thaw what there is.
    await freezer.thaw().catch(() => undefined);
    throw new GuestFreezeFailed((error as Error).message);
  }
  const frozenAt = performance.now();
  timing.freezeMs = frozenAt - freezeStart;
  try {
    await step();
  } finally {
    await thaw(freezer);
    timing.frozenMs = performance.now() - frozenAt;
  }
}

/** Thaws, retrying a few times: a guest left frozen hangs on its next write. */
async function thaw(freezer: GuestFreezer): Promise<void> {
  let last: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await freezer.thaw();
      return;
    } catch (error) {
      last = error as Error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  throw new GuestThawFailed(last!.message);
}
