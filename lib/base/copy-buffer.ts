// Large buffers that the kernel copies into and out of (pread, socket writes) at full speed.
//
// A large Buffer comes page-aligned, and so do the file offsets of blocks (packs, the local disk)
// and the kernel's socket pages. A copy between two addresses equal modulo 4 KiB runs at about
// half speed on x86 ("4K aliasing": each load waits for the store 4 KiB before it that it seems
// to overlap). Starting the buffer a little past the page boundary avoids it: a 2 MiB pread from
// the page cache took 234 µs into a page-aligned buffer and 123 µs into one shifted by 256 bytes
// (best of 20, four rounds, this machine).

/** How far past the page boundary a copy buffer starts; ≥ 64 bytes ends the aliasing. */
export const COPY_SHIFT_BYTES = 256;

/** An uninitialised, unpooled buffer of `size` bytes that does not start on a page boundary. */
export function allocCopyBuffer(size: number): Buffer {
  return Buffer.allocUnsafeSlow(size + COPY_SHIFT_BYTES).subarray(COPY_SHIFT_BYTES);
}
