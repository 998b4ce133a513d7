// Decides what an import source is before a byte of it is read: a regular file or a block device,
// in a format that is either raw or named by the user, whose bytes come from that file alone.
// Image files are untrusted (a guest can write a qcow2 header into its raw disk; a qcow2 can name
// /etc/shadow as its backing file), so probing never picks a non-raw format on its own and no
// backing file, external data file or extent in another file is ever opened.
import { stat } from 'node:fs/promises';
import { execa } from 'execa';
import { ImportFailed, UnsafeImage } from './errors.js';

/** Formats whose data can live in the one file; others (dmg, luks, parallels, …) are refused. */
export const IMPORT_FORMATS = ['raw', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'vdi', 'qed'] as const;

export interface InspectedImage {
  readonly path: string;
  readonly format: string;
  /** Virtual size in bytes. */
  readonly size: number;
  /** For non-raw formats: the QEMU filename (`json:{…}`) that opens it with no backing file. */
  readonly qemuSpec?: string;
  /** A regular file's modification time when inspected: a change while it is read is refused. */
  readonly mtimeMs?: number;
}

const QEMU_IMG_TIMEOUT_MS = 60_000;

interface QemuImageInfo {
  format: string;
  'virtual-size': number;
  filename?: string;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: { type?: string; data?: { 'data-file'?: string; extents?: Array<{ filename?: string }> } };
}

/**
 * A QEMU filename that opens exactly `path`: a `json:` spec, so a path containing `:` or starting
 * with `json:` is never taken as a protocol, and (for formats that can have one) `backing: null`
 * so no backing file is opened even if the header names one.
 */
export function qemuSpecFor(path: string, blockDevice: boolean, format?: string): string {
  const file = { driver: blockDevice ? 'host_device' : 'file', filename: path };
  const spec = format === undefined ? { file } : format === 'raw' ? { driver: format, file } : { driver: format, backing: null, file };
  return `json:${JSON.stringify(spec)}`;
}

/** Only regular files and block devices are disks; /dev/zero would be an endless (or empty) one. */
async function sourceKind(path: string): Promise<{ blockDevice: boolean; fileSize: number; mtimeMs?: number }> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ImportFailed(`cannot open ${path} (${code === 'ENOENT' ? 'no such file' : code ?? 'error'})`, 'check the path');
  }
  if (info.isFile()) return { blockDevice: false, fileSize: info.size, mtimeMs: info.mtimeMs };
  if (info.isBlockDevice()) return { blockDevice: true, fileSize: -1 };
  const kind = info.isCharacterDevice() ? 'a character device' : info.isDirectory() ? 'a directory' : info.isFIFO() ? 'a pipe' : info.isSocket() ? 'a socket' : 'not a regular file';
  throw new UnsafeImage(`${path} is ${kind}, not a disk image`, 'import a regular file or a block device');
}

/** `qemu-img info` of a spec; undefined when qemu-img is not installed. */
async function qemuImgInfo(path: string, spec: string): Promise<QemuImageInfo | undefined> {
  try {
    // Bounded: a probed vmdk opens the extents its descriptor names, which could be a pipe.
    const { stdout } = await execa('qemu-img', ['info', '--output=json', spec], { timeout: QEMU_IMG_TIMEOUT_MS });
    return JSON.parse(stdout) as QemuImageInfo;
  } catch (error) {
    const e = error as { code?: string; stderr?: string; shortMessage?: string; timedOut?: boolean };
    if (e.code === 'ENOENT') return undefined;
    if (e.timedOut) throw new UnsafeImage(`qemu-img info of ${path} did not finish within ${QEMU_IMG_TIMEOUT_MS / 1000} s`, 'check what the image file refers to; convert it to raw first');
    // "qemu-img: Could not open 'json:{…}': Image is not in qcow2 format" → the reason only.
    const line = (e.stderr ?? e.shortMessage ?? '').trim().split('\n')[0] ?? '';
    const reason = line.replace(/^qemu-img: Could not open '.*?': /, '').replace(/^qemu-img: /, '');
    throw new ImportFailed(`cannot read ${path} as a disk image: ${reason}`, 'check the file and its --format');
  }
}

/** Refuses an image whose reading would open any file but `path`. */
function refuseOtherFiles(path: string, format: string, info: QemuImageInfo): void {
  const backing = info['full-backing-filename'] ?? info['backing-filename'];
  if (backing !== undefined) {
    throw new UnsafeImage(
      `${path} (${format}) has a backing file (${JSON.stringify(backing)}); lazyboot imports only self-contained images`,
      'flatten it first if you trust it: qemu-img convert -O qcow2 FILE flat.qcow2',
    );
  }
  const data = info['format-specific']?.data;
  if (data?.['data-file'] !== undefined) {
    throw new UnsafeImage(`${path} (${format}) keeps its data in another file (${JSON.stringify(data['data-file'])}); lazyboot imports only self-contained images`, 'convert it first if you trust it: qemu-img convert -O qcow2 FILE flat.qcow2');
  }
  for (const extent of data?.extents ?? []) {
    if (extent.filename !== info.filename) {
      throw new UnsafeImage(`${path} (${format}) has an extent in another file (${JSON.stringify(extent.filename)}); lazyboot imports only self-contained images`, 'convert it first if you trust it: qemu-img convert -O qcow2 FILE flat.qcow2');
    }
  }
}

/**
 * Inspects an import source. Without `format` the file must probe as raw: anything else could be
 * a raw disk whose guest wrote a header, so the user has to say `--format qcow2` (or `--format raw`).
 */
export async function inspectImageFile(path: string, format?: string): Promise<InspectedImage> {
  if (format !== undefined && !(IMPORT_FORMATS as readonly string[]).includes(format)) {
    throw new UnsafeImage(`cannot import format ${JSON.stringify(format)}`, `use one of ${IMPORT_FORMATS.join(', ')}, or convert the image with qemu-img convert first`);
  }
  const { blockDevice, fileSize, mtimeMs } = await sourceKind(path);
  if (format === 'raw' && !blockDevice) return { path, format, size: fileSize, mtimeMs };
  if (format === undefined || format === 'raw') {
    const info = await qemuImgInfo(path, qemuSpecFor(path, blockDevice, format));
    if (!info) {
      // Without qemu-img nothing is probed: a regular file is read as raw bytes, which is safe.
      if (!blockDevice) return { path, format: 'raw', size: fileSize, mtimeMs };
      throw new ImportFailed('qemu-img is not installed (needed for the size of a block device)', 'install qemu-utils (apt-get install qemu-utils)');
    }
    if (info.format !== 'raw' && !(IMPORT_FORMATS as readonly string[]).includes(info.format)) {
      throw new UnsafeImage(
        `${path} looks like a ${info.format} image, which lazyboot does not import (a raw disk can look like one too)`,
        `if it is a raw disk, say --format raw; else convert it first: qemu-img convert -O raw FILE disk.raw`,
      );
    }
    if (info.format !== 'raw') {
      throw new UnsafeImage(
        `${path} looks like a ${info.format} image, but a raw disk can look like one too`,
        `say which it is: --format ${info.format}, or --format raw to import the file's bytes as they are`,
      );
    }
    // An unattached loop device or an empty card reader is 0 bytes: a mistake, not an image.
    if (blockDevice && info['virtual-size'] === 0) throw new ImportFailed(`${path} is a block device with no data (0 bytes)`, 'attach or insert the disk first');
    // qemu-img rounds a raw file's size up to 512 bytes; the file's own size is the truth.
    return { path, format: 'raw', size: blockDevice ? info['virtual-size'] : fileSize, ...(blockDevice ? {} : { mtimeMs }) };
  }
  const qemuSpec = qemuSpecFor(path, blockDevice, format);
  const info = await qemuImgInfo(path, qemuSpec);
  if (!info) throw new ImportFailed('qemu-img is not installed', 'install qemu-utils (apt-get install qemu-utils)');
  refuseOtherFiles(path, format, info);
  return { path, format, size: info['virtual-size'], qemuSpec };
}
