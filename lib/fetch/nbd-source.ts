// A repository served by `lazyboot repo serve` over NBD: the manifest of REF is the export
// `manifest:REF`, the image `name@N` is the export of that name. Connections are opened lazily
// and reopened after a failure, so a restarted server is picked up again.
import { BlockError, MAX_REQUEST_BYTES } from '../block/backend.js';
import { NbdClient, formatNbdUri, parseNbdUri, type NbdTarget } from '../nbd/client.js';
import { NbdConnectError } from '../nbd/errors.js';
import type { Manifest } from '../repo/manifest-format.js';
import { UnknownImage } from '../repo/errors.js';
import type { ImageReader, ManifestStore, RepositorySource } from './source.js';
import { MANIFEST_DIGEST_SUFFIX, MANIFEST_EXPORT_PREFIX } from '../repo/export-provider.js';
import { createHash } from 'node:crypto';
import { ReadOnlyBackend } from '../block/read-only.js';

export { MANIFEST_EXPORT_PREFIX };

export class NbdSource implements RepositorySource {
  private readonly target: NbdTarget;
  private readonly readers = new Set<NbdImageReader>();

  constructor(readonly uri: string, private readonly connectTimeoutMs = 5_000) {
    this.target = parseNbdUri(uri);
  }

  async manifestBytes(ref: string, store?: ManifestStore): Promise<Buffer> {
    const named = store ? await this.manifestDigest(ref) : undefined;
    if (named) {
      // The version is pinned: a version published meanwhile cannot slip in under the digest.
      const kept = await store!.get(named.digest, named.length);
      if (kept) return kept;
      const bytes = await this.manifestExport(named.exactRef, ref);
      if (createHash('sha256').update(bytes).digest('hex') !== named.digest) {
        throw new BlockError('EIO', `${this.uri} sent a manifest of ${named.exactRef} that does not match its digest`);
      }
      await store!.put(named.digest, bytes).catch(() => undefined); // a cache that cannot store is no error
      return bytes;
    }
    return this.manifestExport(ref, ref);
  }

  /** The `manifest:REF` export's bytes; UnknownImage (naming what the user asked for) when absent. */
  private async manifestExport(ref: string, asked: string): Promise<Buffer> {
    const bytes = await this.exportBytes(MANIFEST_EXPORT_PREFIX + ref);
    if (!bytes) throw new UnknownImage(asked, `${this.uri} has no such image`);
    return bytes;
  }

  /**
   * The exact version `ref` names and its manifest's digest and length (one short read), or
   * undefined from a server that does not offer it (an older lazyboot, another NBD server).
   */
  private async manifestDigest(ref: string): Promise<{ exactRef: string; digest: string; length: number } | undefined> {
    const line = await this.exportBytes(MANIFEST_EXPORT_PREFIX + ref + MANIFEST_DIGEST_SUFFIX);
    const match = line && /^(\S+@\d+) ([0-9a-f]{64}) (\d+)\n$/.exec(line.toString('latin1'));
    return match ? { exactRef: match[1]!, digest: match[2]!, length: Number(match[3]) } : undefined;
  }

  /** The whole content of a small export (a manifest, a boot trace), or undefined when the server has no such export. */
  async exportBytes(exportName: string): Promise<Buffer | undefined> {
    let client: NbdClient;
    try {
      client = await NbdClient.connect({ ...this.target, exportName, connectTimeoutMs: this.connectTimeoutMs });
    } catch (error) {
      if (error instanceof NbdConnectError && /not present/.test(error.message)) return undefined;
      throw error;
    }
    try {
      return await client.read(0, client.size);
    } finally {
      await client.close();
    }
  }

  imageReader(manifest: Manifest): ImageReader {
    const reader = new NbdImageReader({ ...this.target, exportName: `${manifest.name}@${manifest.version}` }, manifest.size, this.connectTimeoutMs);
    this.readers.add(reader);
    return reader;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.readers].map((reader) => reader.close()));
  }
}


/** Reads an image export, (re)connecting on demand. */
class NbdImageReader extends ReadOnlyBackend {
  protected override readonly refusal = 'repository images are read-only';
  readonly constraints = { minimum: 1, preferred: 65536, maximum: MAX_REQUEST_BYTES };
  private client: Promise<NbdClient> | undefined;
  private closed = false;

  constructor(private readonly target: NbdTarget & { exportName: string }, readonly size: number, private readonly connectTimeoutMs: number) {
    super();
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return this.once((client) => client.read(offset, length));
  }

  /** Straight into the caller's buffer (the verify layer passes shared memory for its hasher). */
  async readInto(offset: number, target: Buffer): Promise<void> {
    await this.once((client) => client.readInto(offset, target));
  }

  /**
   * Runs a read; if the server had closed the connection in order as it was sent (its idle
   * timeout crossing our request), runs it once more on a new connection. Reads are idempotent.
   */
  private async once<T>(read: (client: NbdClient) => Promise<T>): Promise<T> {
    const client = await this.connection();
    try {
      return await read(client);
    } catch (error) {
      if (!client.closedByServer || this.closed) throw error;
      return read(await this.connection());
    }
  }

  warm(): void {
    if (!this.closed) this.connection().catch(() => undefined);
  }

  /** Drops the connection (after a timeout): the next read reconnects. */
  reset(reason: string): void {
    const client = this.client;
    this.client = undefined;
    void client?.then((c) => c.destroy(reason), () => undefined);
  }

  private connection(): Promise<NbdClient> {
    if (this.closed) return Promise.reject(new BlockError('ESHUTDOWN', 'repository reader is closed'));
    const existing = this.client;
    if (existing) {
      return existing.then((client) => {
        if (!client.isBroken) return client;
        if (this.client === existing) this.client = undefined;
        return this.connection();
      });
    }
    const connecting = NbdClient.connect({ ...this.target, connectTimeoutMs: this.connectTimeoutMs }).then((client) => {
      if (client.size < this.size) {
        void client.close();
        throw new BlockError('EIO', `${formatNbdUri(this.target)} is ${client.size} bytes, the manifest says ${this.size}`);
      }
      return client;
    });
    this.client = connecting;
    connecting.catch(() => { if (this.client === connecting) this.client = undefined; });
    return connecting;
  }


  async close(): Promise<void> {
    this.closed = true;
    const client = this.client;
    this.client = undefined;
    if (client) await client.then((c) => c.close(), () => undefined);
  }
}

export type { NbdImageReader };
