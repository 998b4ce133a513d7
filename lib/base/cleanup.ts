// Process-wide teardown registry: whatever owns a process, socket or temp dir registers how to
// release it. A library must not own the process's signals, so registering only arms the
// synchronous last resort at process exit (e.g. SIGKILL a child); graceful teardown on
// SIGINT/SIGTERM and on uncaught exceptions is opt-in, for whoever owns the process (the CLI, a
// script, an embedder that wants it). Part of lib/base/: imports nothing of the project.

export interface CleanupEntry {
  /** Full, graceful release (QMP quit, close the COR device, remove files). */
  readonly release: () => Promise<void>;
  /** Last resort at process exit, synchronous: e.g. SIGKILL a child. */
  readonly releaseSync?: () => void;
}

const entries = new Set<CleanupEntry>();
let exitHookInstalled = false;
let signalsInstalled = false;
let uncaughtInstalled = false;
let exiting = false;

/** How long the signal path waits for graceful releases before exiting anyway. */
const RELEASE_DEADLINE_MS = 10_000;

/** Registers a cleanup; returns the function that unregisters it (call it after releasing yourself). */
export function registerCleanup(entry: CleanupEntry): () => void {
  installExitHook();
  entries.add(entry);
  return () => entries.delete(entry);
}

/** Runs every registered release (newest first), once each; used by the signal handlers. */
export async function releaseAll(): Promise<void> {
  const pending = [...entries].reverse();
  entries.clear();
  await Promise.allSettled(pending.map((entry) => entry.release()));
}

/**
 * Opt-in, for the program that owns the process: on SIGINT/SIGTERM release everything registered
 * (VMs quit, COR devices flushed, temp dirs removed), then exit 130/143. A second signal during
 * the teardown does not abandon it; after 10 s it exits anyway. Idempotent.
 */
export function installSignalTeardown(): void {
  installExitHook();
  if (signalsInstalled) return;
  signalsInstalled = true;
  const onSignal = (signal: NodeJS.Signals, exitCode: number) => {
    if (exiting) return;
    exiting = true;
    process.stderr.write(`lazyboot: ${signal}: tearing down\n`);
    void exitAfterRelease(exitCode);
  };
  process.on('SIGINT', () => onSignal('SIGINT', 130));
  process.on('SIGTERM', () => onSignal('SIGTERM', 143));
}

/** Opt-in: also tear down on an uncaught exception (then exit 1). Idempotent. */
export function teardownOnUncaughtException(): void {
  installExitHook();
  if (uncaughtInstalled) return;
  uncaughtInstalled = true;
  process.on('uncaughtException', (error) => {
    process.stderr.write(`lazyboot: unexpected error: ${error.message}\n`);
    if (exiting) return;
    exiting = true;
    void exitAfterRelease(1);
  });
}

/** Whatever way the process exits (process.exit, the end of the event loop), children do not outlive it. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const entry of entries) entry.releaseSync?.();
  });
}

async function exitAfterRelease(exitCode: number): Promise<void> {
  const deadline = setTimeout(() => process.exit(exitCode), RELEASE_DEADLINE_MS);
  await releaseAll();
  clearTimeout(deadline);
  process.exit(exitCode);
}
