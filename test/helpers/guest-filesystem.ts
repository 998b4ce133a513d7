// Test helper: looks inside a guest disk image without mounting or loop devices: a partition is
// cut out with dd at the offset sfdisk reports, then read with debugfs and checked with e2fsck -n.
import { execa } from 'execa';

/** Copies partition `number` (1-based) of a raw disk image into `out`. */
export async function extractPartition(image: string, number: number, out: string): Promise<void> {
  const table = JSON.parse((await execa('sfdisk', ['-J', image])).stdout) as { partitiontable: { partitions: Array<{ start: number; size: number }>; sectorsize?: number } };
  const partition = table.partitiontable.partitions[number - 1];
  if (!partition) throw new Error(`${image} has no partition ${number}`);
  const sector = table.partitiontable.sectorsize ?? 512;
  await execa('dd', [`if=${image}`, `of=${out}`, `bs=${sector}`, `skip=${partition.start}`, `count=${partition.size}`, 'conv=sparse', 'status=none']);
}

/** The content of `path` in an ext2/3/4 file system image (debugfs cat). */
export async function readGuestFile(filesystem: string, path: string): Promise<string> {
  const result = await execa('debugfs', ['-R', `cat ${path}`, filesystem], { reject: false });
  if (/File not found/.test(result.stderr)) throw new Error(`${path} is not in ${filesystem}`);
  return result.stdout;
}

/** `e2fsck -fn`: exit 0 means the file system checks clean (nothing changed: read-only). */
export async function fsckReadOnly(filesystem: string): Promise<{ clean: boolean; output: string }> {
  const result = await execa('e2fsck', ['-fn', filesystem], { reject: false });
  return { clean: result.exitCode === 0, output: `${result.stdout}\n${result.stderr}` };
}
