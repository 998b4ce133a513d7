// Opens a disk image file as a stream of raw bytes for import. Raw files are read directly;
// other formats (qcow2, vmdk, …) are exported read-only by `qemu-nbd` and streamed by `nbdcopy`
// to a pipe, so no temporary copy of the whole image is ever made.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { execa } from 'execa';
import { ImportFailed } from './errors.js';

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

/** Asks qemu-img what the file is; `format` skips the probe. */
async function probe(file: string, format?: string): Promise<{ format: string; size: number }> {
  const args = ['info', '--output=json', ...(format ? ['-f', format] : []), file];
  let stdout: string;
  try {
    ({ stdout } = await execa('qemu-img', args));
  } catch (error) {
    const e = error as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT') {
      // Without qemu-img only raw files can be read; say so rather than guess for other formats.
      if (format === undefined || format === 'raw') return { format: 'raw', size: -1 };
      throw new ImportFailed('qemu-img is not installed', 'install qemu-utils (apt-get install qemu-utils)');
    }
    throw new ImportFailed(`cannot read ${file} as a disk image: ${(e.stderr ?? e.shortMessage ?? '').trim().split('\n')[0]}`);
  }
  const info = JSON.parse(stdout) as { format: string; 'virtual-size': number };
  return { format: info.format, size: info['virtual-size'] };
}

export async function openImageSource(file: string, format?: string): Promise<ImageSource> {
  let fileSize: number | undefined;
  try {
    const info = await stat(file);
    if (info.isFile()) fileSize = info.size;
  } catch {
    throw new ImportFailed(`cannot open ${file}`, 'check the path');
  }
  const probed = await probe(file, format);
  if (probed.format === 'raw') {
    // qemu-img rounds a raw file's size up to 512 bytes; the file's own size is the truth.
    if (fileSize !== undefined) probed.size = fileSize;
    if (probed.size < 0) throw new ImportFailed(`cannot tell the size of ${file} without qemu-img`, 'install qemu-utils (apt-get install qemu-utils)');
    const stream = createReadStream(file, { start: 0, end: Math.max(0, probed.size - 1), highWaterMark: 1024 * 1024 });
    return {
      format: 'raw',
      size: probed.size,
      stream: probed.size === 0 ? (async function* () {})() : stream,
      finish: async () => {},
      cancel: () => stream.destroy(),
    };
  }
  // `[ qemu-nbd … ]` is libnbd's socket-activation syntax: nbdcopy runs qemu-nbd on a private socket.
  const copier = execa('nbdcopy', ['--', '[', 'qemu-nbd', '-r', '-f', probed.format, file, ']', '-'], {
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: { stdout: false, stderr: true },
    encoding: 'buffer',
  });
  copier.catch(() => {}); // surfaced by finish()
  return {
    format: probed.format,
    size: probed.size,
    stream: copier.stdout!,
    finish: async () => {
      try {
        await copier;
      } catch (error) {
        const e = error as { code?: string; stderr?: Uint8Array | string };
        if (e.code === 'ENOENT') throw new ImportFailed('nbdcopy is not installed', 'install libnbd-bin and qemu-utils');
        const stderr = Buffer.from(e.stderr ?? '').toString().trim().split('\n')[0];
        throw new ImportFailed(`reading ${file} (${probed.format}) through qemu-nbd failed: ${stderr}`);
      }
    },
    cancel: () => copier.kill(),
  };
}
