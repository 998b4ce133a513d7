// NBD client readInto (payloads read by the socket straight into the caller's buffer) against
// qemu-nbd: interleaved with plain reads, many in flight, odd sizes, shared memory targets.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connectWhenUp } from './helpers/connect-when-up.js';

test('readInto and read interleaved, many in flight, fill exactly the right bytes', (t) => withDir(async ({ path: dir }) => {
  const file = join(dir, 'disk.raw');
  const content = randomBytes(9 * 1024 * 1024 + 4096);
  await writeFile(file, content);
  const socket = join(dir, 'nbd.sock');
  const server = execa('qemu-nbd', ['-k', socket, '-f', 'raw', '--shared=4', '--read-only', file], { reject: false });
  try {
    const client = await connectWhenUp(`nbd+unix:///?socket=${socket}`);
    try {
      // Sizes from 1 byte to 4 MiB + a bit, at unaligned offsets; every other one into a guard-banded
      // target in shared memory (the bytes around the target must stay untouched).
      const sizes = [1, 17, 4096, 65536, 65536 + 3, 262144, 300001, 4 * 1024 * 1024 + 5, 2 * 1024 * 1024];
      const jobs = sizes.flatMap((size, i) => [0, 1].map(async (kind) => {
        const offset = (i * 777_777 + kind * 12345) % (content.length - size);
        if (kind === 0) {
          t.true((await client.read(offset, size)).equals(content.subarray(offset, offset + size)), `read ${size}`);
          return;
        }
        const backing = Buffer.from(new SharedArrayBuffer(size + 64)).fill(0xee);
        await client.readInto(offset, backing.subarray(32, 32 + size));
        t.true(backing.subarray(32, 32 + size).equals(content.subarray(offset, offset + size)), `readInto ${size}`);
        t.true(backing.subarray(0, 32).every((b) => b === 0xee) && backing.subarray(32 + size).every((b) => b === 0xee), `guard bands of ${size}`);
      }));
      await Promise.all(jobs);
      // The whole export in one readInto (split into several requests by the client).
      const whole = Buffer.alloc(content.length);
      await client.readInto(0, whole);
      t.true(whole.equals(content));
    } finally {
      await client.close();
    }
  } finally {
    server.kill('SIGTERM');
    await server;
  }
}, { unsafeCleanup: true }));
