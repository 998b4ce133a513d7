// One process per local disk. Two writers of one disk and map would break every durability rule,
// so a second opener gets a clear error naming the holder.
//
// The lock is a listening socket in Linux's abstract unix namespace, named after the disk: bind()
// is atomic (EADDRINUSE while another process holds the name) and the kernel drops the name when
// its holder dies, even on SIGKILL, so there is no stale lock to guess about and no PID to reuse.
// (A PID file was racy: created empty and filled after, a reader saw "NaN", called it stale and
// took it.) Node has no flock(); this needs no native code. Its socket is close-on-exec, so
// QEMU and other children never inherit it. The holder answers a connection with its PID, which
// is how a contender names it.
//
// The name is keyed by identity, not by path: the directory's st_dev:st_ino plus the file name
// (taken before the disk exists, so two processes creating one disk race on it), and once the disk
// is open the disk's own identity too (a hard link or a second name of one block device).
// Limits: abstract names live in the network namespace (processes in separate network namespaces
// sharing a filesystem do not see each other's locks), and they have no permissions: a local user
// can hold a disk's name and keep it from being served (a denial of service, no access to data).
import { createConnection, createServer, type Server } from 'node:net';
import { stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { LazybootError } from '../base/errors.js';
import { DiskInUse } from './errors.js';
import { DiskDirectoryMissing } from './errors.js';

export interface DiskLock {
  /** Also holds the disk's own identity (after it is open); throws DiskInUse if another process has it. */
  holdIdentity(identity: string): Promise<void>;
  release(): Promise<void>;
}

/** How long a contender waits for the holder to say its PID (it is answered at once when alive). */
const HOLDER_REPLY_MS = 2000;

export async function lockDisk(disk: string): Promise<DiskLock> {
  const directory = dirname(resolve(disk));
  const info = await stat(directory).catch((error: NodeJS.ErrnoException) => {
    throw new DiskDirectoryMissing(disk, directory, error.code === 'ENOENT' ? 'does not exist' : `cannot be read (${error.code ?? error.message})`);
  });
  if (!info.isDirectory()) throw new DiskDirectoryMissing(disk, directory, 'is not a directory');
  const servers: Server[] = [await holdName(disk, `path ${info.dev}:${info.ino}/${basename(disk)}`)];
  return {
    async holdIdentity(identity) {
      servers.push(await holdName(disk, `disk ${identity}`));
    },
    async release() {
      await Promise.all(servers.splice(0).map((server) => new Promise<void>((done) => server.close(() => done()))));
    },
  };
}

/** The abstract socket name of a key (hashed: names are limited to 107 bytes). */
function abstractName(key: string): string {
  return `\0lazyboot-disk-lock-${createHash('sha256').update(key).digest('hex').slice(0, 40)}`;
}

async function holdName(disk: string, key: string): Promise<Server> {
  const name = abstractName(key);
  const server = createServer((socket) => socket.end(`${process.pid}\n`));
  server.maxConnections = 64; // anyone may connect to an abstract socket: bound what it costs
  try {
    await new Promise<void>((listening, failed) => {
      server.once('error', failed);
      server.listen({ path: name, exclusive: true }, () => {
        server.off('error', failed);
        listening();
      });
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new DiskInUse(disk, await askHolder(name));
    throw new LazybootError(`cannot lock ${disk}: the lock's abstract unix socket failed (${code ?? (error as Error).message})`,
      'this needs Linux with unix sockets allowed (no sandbox that denies them)');
  }
  // A forgotten release must not keep a finished command alive; the process's exit frees the name.
  server.unref();
  return server;
}

/** The holder's PID, or undefined when it does not answer (it is exiting). */
function askHolder(name: string): Promise<number | undefined> {
  return new Promise((answer) => {
    let text = '';
    const socket = createConnection({ path: name });
    const timer = setTimeout(() => socket.destroy(), HOLDER_REPLY_MS);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => { text += chunk; });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const pid = Number.parseInt(text, 10);
      answer(Number.isInteger(pid) && pid > 0 ? pid : undefined);
    });
  });
}
