// A bandwidth-limited unix-socket proxy for the boot benchmark: it stands for the network between
// a repository and the target, counts the bytes the target received, and caps them at a rate
// shared by all connections (one link), like a real line would. Optionally each request is held
// for a fixed latency on its way to the repository (a far repository: a round trip per request).
import net from 'node:net';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export class ThrottledProxy {
  /** Bytes sent from the upstream (repository) to clients (the target) so far. */
  bytesToClients = 0;
  #linkFreeAt = 0;
  readonly #sockets = new Set<net.Socket>();

  private constructor(private readonly server: net.Server, readonly socketPath: string, private readonly bytesPerSecond: number, private readonly latencyMs: number) {}

  /** `bytesPerSecond` 0 = unlimited; `latencyMs` added to every request (0 = none). */
  static async start(socketPath: string, upstreamPath: string, bytesPerSecond: number, latencyMs = 0): Promise<ThrottledProxy> {
    await rm(socketPath, { force: true });
    let proxy: ThrottledProxy | undefined;
    const server = net.createServer((client) => proxy!.#relay(client, upstreamPath));
    proxy = new ThrottledProxy(server, socketPath, bytesPerSecond, latencyMs);
    await new Promise<void>((resolve, reject) => server.listen(socketPath, resolve).once('error', reject));
    return proxy;
  }

  #relay(client: net.Socket, upstreamPath: string): void {
    const upstream = net.connect(upstreamPath);
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      socket.on('close', () => {
        this.#sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    // Requests are small: only the replies are metered. Latency: each chunk of requests waits the
    // same time, so order is kept and requests in flight overlap (as on a real line).
    if (this.latencyMs > 0) client.on('data', (chunk: Buffer) => void setTimeout(() => upstream.write(chunk), this.latencyMs));
    else client.pipe(upstream);
    void (async () => {
      try {
        for await (const chunk of upstream) {
          await this.#waitForLink((chunk as Buffer).length);
          this.bytesToClients += (chunk as Buffer).length;
          if (!client.write(chunk)) await new Promise((resolve) => client.once('drain', resolve));
        }
      } catch {
        // a side closed: the close handlers end both
      }
    })();
  }

  /** Reserves the link for `bytes` and waits until they have "crossed" it. */
  async #waitForLink(bytes: number): Promise<void> {
    if (!this.bytesPerSecond) return;
    const now = performance.now();
    const start = Math.max(now, this.#linkFreeAt);
    this.#linkFreeAt = start + (bytes * 1000) / this.bytesPerSecond;
    const wait = this.#linkFreeAt - now;
    if (wait >= 1) await sleep(wait);
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }
}

/**
 * The proxy in its own process, so it does not share an event loop with the COR device under test:
 * `node bench-boot-proxy.js LISTEN UPSTREAM BYTES_PER_SECOND [LATENCY_MS]`; prints `bytes N` lines as the count grows.
 */
async function runAsProcess(listen: string, upstream: string, rate: number, latencyMs: number): Promise<void> {
  const proxy = await ThrottledProxy.start(listen, upstream, rate, latencyMs);
  let reported = -1;
  const report = () => {
    if (proxy.bytesToClients !== reported) {
      reported = proxy.bytesToClients;
      process.stdout.write(`bytes ${reported}\n`);
    }
  };
  process.stdout.write('listening\n');
  const timer = setInterval(report, 20);
  const stop = async () => {
    clearInterval(timer);
    report();
    await proxy.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!) && (process.argv.length === 5 || process.argv.length === 6)) {
  void runAsProcess(process.argv[2]!, process.argv[3]!, Number(process.argv[4]), Number(process.argv[5] ?? 0));
}
