// A server just started (qemu-nbd, nbdkit) may not listen yet: its socket file can exist a moment
// before listen(), and a TCP port refuses until then. Waiting for the file is not enough, and a
// probe connection is wrong (qemu-nbd without --persistent exits when its last client leaves), so
// the real client's connect is retried while the server is not there yet (bounded).
import { setTimeout as sleep } from 'node:timers/promises';
import { NbdClient, type NbdConnectOptions } from '../../lib/nbd/client.js';

const NOT_UP_YET = /ECONNREFUSED|ENOENT/;

export async function connectWhenUp(target: string | NbdConnectOptions, attempts = 200): Promise<NbdClient> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await NbdClient.connect(target);
    } catch (error) {
      if (attempt >= attempts || !NOT_UP_YET.test((error as Error).message)) throw error;
      await sleep(50);
    }
  }
}
