// One process per local disk: `<disk>.lock` holds the owner's PID. Two writers of one disk and map
// would break every durability rule, so a second opener gets a clear error; a lock left by a
// process that died (SIGKILL, power loss) is taken over.
import { open, readFile, unlink } from 'node:fs/promises';
import { LazybootError } from '../errors.js';
import { processAlive } from '../process-alive.js';

export class DiskInUse extends LazybootError {
  constructor(disk: string, pid: number) {
    super(`${disk} is in use by process ${pid}`, 'stop that process first (one lazyboot process per disk)');
  }
}

export interface DiskLock {
  release(): Promise<void>;
}

export async function lockDisk(disk: string): Promise<DiskLock> {
  const path = `${disk}.lock`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const file = await open(path, 'wx');
      await file.writeFile(`${process.pid}\n`);
      await file.close();
      return { release: () => unlink(path).catch(() => undefined) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(owner) && owner > 0 && processAlive(owner)) throw new DiskInUse(disk, owner);
    await unlink(path).catch(() => undefined); // stale (or half-written by a dying owner)
  }
  throw new DiskInUse(disk, Number.NaN);
}
