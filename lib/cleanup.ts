// Process-wide teardown registry: whatever owns a process, socket or temp dir registers how to
// release it, and it is released on normal exit, SIGINT/SIGTERM and uncaught errors alike.
// The handlers are installed with the first registration, so importing this costs nothing.

export interface CleanupEntry {
  /** Full, graceful release (QMP quit, close the COR device, remove files). */
  readonly release: () => Promise<void>;
  /** Last resort at process exit, synchronous: e.g. SIGKILL a child. */
  readonly releaseSync?: () => void;
}

const entries = new Set<CleanupEntry>();
let installed = false;
let exiting = false;

/** How long the signal path waits for graceful releases before exiting anyway. */
const RELEASE_DEADLINE_MS = 10_000;

/** Registers a cleanup; returns the function that unregisters it (call it after releasing yourself). */
export function registerCleanup(entry: CleanupEntry): () => void {
  installHandlers();
  entries.add(entry);
  return () => entries.delete(entry);
}

/** Runs every registered release (newest first), once each; used by the signal handlers. */
export async function releaseAll(): Promise<void> {
  const pending = [...entries].reverse();
  entries.clear();
  await Promise.allSettled(pending.map((entry) => entry.release()));
}

function installHandlers(): void {
  if (installed) return;
  installed = true;
  const onSignal = (signal: NodeJS.Signals, exitCode: number) => {
    if (exiting) return; // a second Ctrl-C while tearing down does not abandon the teardown
    exiting = true;
    process.stderr.write(`lazyboot: ${signal}: tearing down\n`);
    void exitAfterRelease(exitCode);
  };
  process.on('SIGINT', () => onSignal('SIGINT', 130));
  process.on('SIGTERM', () => onSignal('SIGTERM', 143));
  process.on('exit', () => {
    for (const entry of entries) entry.releaseSync?.();
  });
}

/**
 * Also tear down on an uncaught exception (then exit 1). Opt-in: a library must not take over
 * a host program's crash handling; the CLI turns it on.
 */
export function teardownOnUncaughtException(): void {
  installHandlers();
  process.on('uncaughtException', (error) => {
    process.stderr.write(`lazyboot: unexpected error: ${error.message}\n`);
    if (exiting) return;
    exiting = true;
    void exitAfterRelease(1);
  });
}

async function exitAfterRelease(exitCode: number): Promise<void> {
  const deadline = setTimeout(() => process.exit(exitCode), RELEASE_DEADLINE_MS);
  await releaseAll();
  clearTimeout(deadline);
  process.exit(exitCode);
}
