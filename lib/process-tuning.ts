// V8 tuning for a process that carries lazyboot's data path, in one place, applied the same way by
// the CLI, by the benchmarks on every side they compare, and by any embedder that opts in. It is
// process-wide, so a library never applies it by itself: the process's owner calls tuneProcess()
// once at start-up, before the data path runs (the flags are read as V8 (re)sets its budgets and
// grows its heap, so later calls cover less).
//
// Tier up later ('data-path' and 'disk-server'). Such a process starts with a burst: a guest boots,
// or a client copies the disk, and hundreds of MiB go through the device in its first second. With
// V8's default tiering, about a hundred functions reach TurboFan during the first 256 MiB of a cold
// read, and compiling them took ~0.4 s of CPU on the background threads (measured with
// --trace-opt), on a 2-core machine that the device shares with the repository server, the client
// and the guest. With an interrupt budget ~10× the default, few functions are compiled in that
// burst; the rest runs as Sparkplug baseline code, which costs little here: the time goes to system
// calls and hashing, not to JavaScript. A cold 256 MiB read with a guest-like reader took ~15% less
// time (A/B in one run, medians of 6); see bench/results/cor.md.
//
// Keep the young generation small ('disk-server' only). Under steady allocation V8 doubles the
// young generation's semi-spaces up to 16 MiB each, and all of it becomes resident: a disk server
// serving a cold read measured +14..30 MiB of RSS for it, with no measurable gain in speed (its
// requests allocate little that lives long). Heap sizes are start-up flags, which `node
// bin/lazyboot.js ...` does not pass; the growth factor, however, is read at each growth, so
// setting it to 1 before the heap grows keeps the semi-spaces at their initial 1 MiB. Not applied
// to 'data-path': a boot is short-lived, and its RSS was not what was measured.
import { setFlagsFromString } from 'node:v8';

/**
 * 'data-path': a process that serves a copy-on-read device for a while (`lazyboot boot`/`run`, a
 * program that calls launch()). 'disk-server': a long-running disk process (`lazyboot disk …`),
 * where RSS matters more than a few scavenges.
 */
export type ProcessRole = 'data-path' | 'disk-server';

/** Bytecode "budget" a function spends before V8 considers optimizing it (default 132 KiB in Node 20). */
const INTERRUPT_BUDGET = 1_500_000;

/** Applies the V8 flags of `role` to this process. Idempotent; call it at start-up. */
export function tuneProcess(role: ProcessRole): void {
  setFlagsFromString(`--interrupt-budget=${INTERRUPT_BUDGET}`);
  if (role === 'disk-server') setFlagsFromString('--semi-space-growth-factor=1');
}
