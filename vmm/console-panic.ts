// Tells a guest reset from a kernel panic by the serial console: a Linux kernel that panics with
// `panic=N` resets the machine (and a transient VM runs with -no-reboot, so QEMU ends as after any
// reset); what tells the two apart is the kernel's last words, `Kernel panic - not syncing: …`.
// (QEMU's GUEST_PANICKED needs a pvpanic device and its driver in the guest: most images lack one.)
import { open } from 'node:fs/promises';

/** How much of the console's end is searched. */
const PANIC_SEARCH_BYTES = 16 * 1024;
const PANIC_LINE = /Kernel panic - not syncing:?\s*(.*)$/;

/** The reason of the kernel panic at the end of the console log, if the kernel panicked. */
export async function panicLineIn(consoleLog: string): Promise<string | undefined> {
  let handle;
  try {
    handle = await open(consoleLog, 'r');
  } catch {
    return undefined; // no console log: nothing says it panicked
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, PANIC_SEARCH_BYTES);
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(length), 0, length, size - length);
    const lines = buffer.subarray(0, bytesRead).toString('utf8').split(/\r?\n/).reverse();
    for (const line of lines) {
      const match = PANIC_LINE.exec(line);
      if (match) return match[1]!.trim() || 'no reason given';
    }
    return undefined;
  } finally {
    await handle.close();
  }
}
