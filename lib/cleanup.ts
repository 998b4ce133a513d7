// Re-export of the teardown registry (lib/base/cleanup.ts) for the scripts that import it from
// here (scripts/bench-cor.ts, under parallel rework); once merged, point them at lib/base and delete this.
export { registerCleanup, releaseAll, installSignalTeardown, teardownOnUncaughtException, type CleanupEntry } from './base/cleanup.js';
