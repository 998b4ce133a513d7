// Lets V8 optimize (TurboFan) only the really hot functions of a data-path process. Such a process
// starts with a burst: a guest boots, or a client copies the disk, and hundreds of MiB go through
// the device in its first second. With V8's default tiering, about a hundred functions reach
// TurboFan during the first 256 MiB of a cold read, and compiling them took ~0.4 s of CPU on the
// background threads (measured with --trace-opt), on a 2-core machine that the device shares with
// the repository server, the client and the guest. With a budget ~10× the default, few functions
// are compiled in that burst; the rest runs as Sparkplug baseline code, which costs little here:
// the time goes to system calls and hashing, not to JavaScript. A cold 256 MiB read with a
// guest-like reader took ~15% less time (A/B in one run, medians of 6); see bench/results/cor.md.
import { setFlagsFromString } from 'node:v8';

/** Bytecode "budget" a function spends before V8 considers optimizing it (default 132 KiB in Node 20). */
const INTERRUPT_BUDGET = 1_500_000;

export function tierUpLater(): void {
  // Read when a function's budget is (re)set, so setting it at start-up covers the data path.
  setFlagsFromString(`--interrupt-budget=${INTERRUPT_BUDGET}`);
}
