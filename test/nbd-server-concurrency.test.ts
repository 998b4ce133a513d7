// Requests on one connection run concurrently and are answered as they complete, not in order.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { join } from 'node:path';
import { startNbdServer } from '../lib/nbd/server.js';
import * as P from '../lib/nbd/protocol.js';
import { MemoryBackend } from './helpers/memory-backend.js';
import { RawPeer } from './helpers/nbd-raw-peer.js';

/** Reads at offset 0 wait until the test lets them go; everything else is immediate. */
class SlowStartBackend extends MemoryBackend {
  release!: () => void;
  private readonly released = new Promise<void>((resolve) => (this.release = resolve));

  override async read(offset: number, length: number): Promise<Buffer> {
    if (offset === 0) await this.released;
    return super.read(offset, length);
  }
}

test('a slow request does not hold back the replies to later ones', (t) =>
  withDir(async ({ path: dir }) => {
    const backend = new SlowStartBackend(1024 * 1024);
    backend.data.fill(7);
    const socket = join(dir, 'c.sock');
    const server = await startNbdServer({ exports: { list: async () => [], open: async () => backend }, socketPath: socket });
    const peer = await RawPeer.connect(socket);
    try {
      await peer.go('any');
      peer.sendRequest(P.CMD_READ, 0, 4096, { cookie: 1 });
      for (let cookie = 2; cookie <= 20; cookie++) peer.sendRequest(P.CMD_READ, cookie * 4096, 4096, { cookie });
      // The first read is held until the 19 later ones were received: a server that answered in
      // order would never send them, and the test would time out instead of passing.
      t.timeout(60_000);
      const order: number[] = [];
      for (let i = 0; i < 20; i++) {
        if (i === 19) backend.release();
        const reply = await peer.readSimpleReply(4096);
        t.is(reply.error, 0);
        t.true(reply.data!.equals(Buffer.alloc(4096, 7)));
        order.push(reply.cookie);
      }
      t.is(order[order.length - 1], 1, 'the held read is answered last');
      t.deepEqual([...order].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1));
    } finally {
      peer.close();
      await server.close();
    }
  }, { unsafeCleanup: true }));
