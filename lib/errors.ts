// The lib/ parts' door to the shared error base (lib/base/errors.ts). Kept as a re-export because
// parts under parallel rework (repo, nbd, map, cor, fetch, cli) import '../errors.js'; once merged,
// point them at lib/base/errors.js and delete this file. vmm/ and guest/ must import lib/base directly.
export { LazybootError, UsageError } from './base/errors.js';
