// Opens a disk image file as a stream of raw bytes for import. Raw files are read directly;
// other formats (qcow2, vmdk, …) are exported read-only by `qemu-nbd` and streamed by `nbdcopy`
// to a pipe, so no temporary copy of the whole image is ever made. What may be opened, and how,
// is decided by image-file.ts.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { execa } from 'execa';
import { ImportFailed } from './errors.js';
import type { InspectedImage } from './image-file.js';

export interface ImageSource {
  readonly format: string;
  /** Virtual size in bytes. */
  readonly size: number;
  readonly stream: AsyncIterable<Buffer>;
  /** Waits for helper processes; throws if one failed. Call after the stream is consumed. */
  finish(): Promise<void>;
  /** Stops helper processes early (on error). */
  cancel(): void;
}

/**
 * Starts reading an image that inspectImageFile accepted. Consume the stream at once: a helper
 * whose output is not read may have it discarded when it exits (execa drains it).
 */
export function openImageSource(image: InspectedImage): ImageSource {
  const file = image.path;
  if (image.qemuSpec === undefined) {
    const stream = createReadStream(file, { start: 0, end: Math.max(0, image.size - 1), highWaterMark: 1024 * 1024 });
    return {
      format: 'raw',
      size: image.size,
      stream: unchangedWhileRead(image, image.size === 0 ? [] : stream),
      finish: async () => {},
      cancel: () => stream.destroy(),
    };
  }
  // `[ qemu-nbd … ]` is libnbd's socket-activation syntax: nbdcopy runs qemu-nbd on a private socket.
  const copier = execa('nbdcopy', ['--', '[', 'qemu-nbd', '-r', image.qemuSpec, ']', '-'], {
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: { stdout: false, stderr: true },
    encoding: 'buffer',
  });
  copier.catch(() => {}); // surfaced by finish()
  return {
    format: image.format,
    size: image.size,
    stream: copier.stdout!,
    finish: async () => {
      try {
        await copier;
      } catch (error) {
        const e = error as { code?: string; stderr?: Uint8Array | string };
        if (e.code === 'ENOENT') throw new ImportFailed('nbdcopy is not installed', 'install libnbd-bin and qemu-utils');
        const stderr = Buffer.from(e.stderr ?? '').toString().trim().split('\n')[0];
        throw new ImportFailed(`reading ${file} (${image.format}) through qemu-nbd failed: ${stderr}`);
      }
    },
    cancel: () => copier.kill(),
  };
}

/**
 * The raw file's bytes, then a check that the file is as it was inspected: a file that grew,
 * shrank or was written meanwhile (a VM still running on it) would give a torn image.
 */
async function* unchangedWhileRead(image: InspectedImage, bytes: AsyncIterable<Buffer> | Buffer[]): AsyncGenerator<Buffer> {
  let read = 0;
  for await (const chunk of bytes) {
    read += chunk.length;
    yield chunk;
  }
  if (image.mtimeMs === undefined) return;
  const now = await stat(image.path).catch(() => undefined);
  const what = !now ? 'was removed' : now.size !== image.size ? `went from ${image.size} to ${now.size} bytes` : now.mtimeMs !== image.mtimeMs || read !== image.size ? 'was written' : undefined;
  if (what) throw new ImportFailed(`${image.path} changed while it was read (it ${what}); nothing was imported`, 'import it again when nothing writes to it (stop the VM using it first)');
}
