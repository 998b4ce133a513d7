// Repository storage in an S3 bucket under a prefix (`s3://BUCKET/PREFIX`), through the official
// SDK. Each key is one object; an object appears whole or not at all (a PUT, or a multipart upload
// when it is completed); create-only writes use `If-None-Match: *`, so two writers on two hosts
// never both create one key. Endpoint, credentials and region are taken the way S3 tools take
// them: --s3-endpoint, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / `endpoint_url` in the shared
// config; AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the shared credentials file (AWS_PROFILE);
// AWS_REGION or the shared config, else us-east-1. Failures of the store become one-line errors.
// Reads: s3-range-reader.ts (ranges of up to 4 MiB, bounded, retried). A request that fails for a
// transient reason is retried by the SDK (S3_ATTEMPTS); failing over to another repository is
// lib/fetch/failover.ts's job. Over 300 lines: the storage and its multipart upload share one
// client and one mapping of the SDK's errors.
import {
  S3Client, GetObjectCommand, PutObjectCommand, DeleteObjectCommand, ListObjectsV2Command,
  CreateMultipartUploadCommand, UploadPartCommand, ListMultipartUploadsCommand, CompleteMultipartUploadCommand, AbortMultipartUploadCommand,
} from '@aws-sdk/client-s3';
import { UsageError } from '../../base/errors.js';
import { RepositoryCorrupt, StoreUnavailable } from '../errors.js';
import type { ObjectUpload, RangeReader, RepositoryStorage, StoredEntry, UnfinishedUpload } from './storage.js';
import { ObjectRangeReader, RangeSlots, S3_ATTEMPTS, S3_READ_SHAPE } from './s3-range-reader.js';
import { errorName, httpStatus, networkCode } from './s3-error-fields.js';

const S3_URI = /^s3:\/\/([^/]*)(?:\/(.*))?$/;
/** S3's bucket naming rules (lower case, digits, dots, hyphens; 3 to 63 characters). */
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
/** Multipart uploads send parts of this size (S3 needs at least 5 MiB but for the last). */
const PART_BYTES = 8 * 1024 * 1024;
/** Parts of one upload in flight at once. */
const PARTS_IN_FLIGHT = 2;
/** A create-only PUT racing another one may get 409 (ConditionalRequestConflict): try again. */
const CONFLICT_RETRIES = 5;

/** The pinned SDK warns on every process that Node 20 will not get its future releases; lazyboot pins it. */
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export class S3Storage implements RepositoryStorage {
  readonly isLocalDirectory = false;
  readonly readShape = S3_READ_SHAPE;
  readonly location: string;
  readonly bucket: string;
  /** The key prefix, '' or ending in '/'. */
  private readonly prefix: string;
  /** The endpoint named by a flag or the environment, for messages ('' when the SDK finds it). */
  private readonly endpoint: string | undefined;
  readonly client: S3Client;
  /** Bounds the range GETs in flight (see s3-range-reader.ts). */
  readonly rangeSlots = new RangeSlots();

  constructor(uri: string, endpointFlag?: string) {
    const match = S3_URI.exec(uri);
    if (!match || !BUCKET_NAME.test(match[1]!)) {
      throw new UsageError(`invalid repository URI ${JSON.stringify(uri)}`, 'use s3://BUCKET/PREFIX (a bucket name of 3-63 lower-case letters, digits, "." and "-")');
    }
    this.bucket = match[1]!;
    const prefix = (match[2] ?? '').replace(/\/+$/, '');
    this.prefix = prefix === '' ? '' : `${prefix}/`;
    this.location = `s3://${this.bucket}${prefix === '' ? '' : `/${prefix}`}`;
    this.endpoint = endpointFlag || process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL || undefined;
    if (this.endpoint !== undefined && !/^https?:\/\/[^/]+/.test(this.endpoint)) {
      throw new UsageError(`invalid S3 endpoint ${JSON.stringify(this.endpoint)}`, 'use http://HOST:PORT or https://HOST (--s3-endpoint or AWS_ENDPOINT_URL)');
    }
    this.client = new S3Client({
      ...(this.endpoint !== undefined ? { endpoint: this.endpoint, forcePathStyle: true } : {}),
      region: regionProvider(),
      maxAttempts: S3_ATTEMPTS,
      // Ceph and other S3 stores refuse the SDK's default streaming checksums (411 MissingContentLength).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // An unreachable endpoint fails in seconds, not after the OS's connect timeout.
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000 },
    });
  }

  describe(key: string): string {
    return key === '' ? this.location : `${this.location}/${key}`;
  }

  private key(key: string): string {
    return this.prefix + key;
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      const reply = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
      const bytes = await reply.Body!.transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (error) {
      if (errorName(error) === 'NoSuchKey') return undefined;
      throw this.storeError(error, `reading ${this.describe(key)}`);
    }
  }

  async list(prefix: string): Promise<StoredEntry[]> {
    const listed = this.key(prefix === '' ? '' : `${prefix}/`);
    const entries: StoredEntry[] = [];
    let token: string | undefined;
    do {
      let reply;
      try {
        reply = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: listed, Delimiter: '/', ...(token ? { ContinuationToken: token } : {}) }));
      } catch (error) {
        throw this.storeError(error, `listing ${this.describe(prefix)}`);
      }
      for (const item of reply.CommonPrefixes ?? []) entries.push({ name: item.Prefix!.slice(listed.length, -1), kind: 'directory' });
      for (const item of reply.Contents ?? []) {
        entries.push({ name: item.Key!.slice(listed.length), kind: 'file', ...(item.Size !== undefined ? { size: item.Size } : {}), ...(item.LastModified ? { modified: item.LastModified } : {}) });
      }
      token = reply.IsTruncated ? reply.NextContinuationToken : undefined;
    } while (token);
    return entries;
  }

  async put(key: string, data: Buffer): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key(key), Body: data, ContentLength: data.length }));
    } catch (error) {
      throw this.storeError(error, `writing ${this.describe(key)}`);
    }
  }

  async putIfAbsent(key: string, data: Buffer): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key(key), Body: data, ContentLength: data.length, IfNoneMatch: '*' }));
        return true;
      } catch (error) {
        const status = httpStatus(error);
        if (status === 409 && attempt < CONFLICT_RETRIES) {
          await new Promise((resolve) => setTimeout(resolve, 50 * 2 ** attempt));
          continue;
        }
        if (status !== 412) throw this.storeError(error, `creating ${this.describe(key)}`);
        // Our own earlier attempt may have succeeded with its reply lost (the SDK retried): the
        // object is ours when it holds exactly our bytes.
        const existing = await this.get(key);
        return existing !== undefined && existing.equals(data);
      }
    }
  }

  upload(key: string): ObjectUpload {
    return new MultipartUpload(this, this.key(key), this.describe(key));
  }

  openRange(key: string): RangeReader {
    return new ObjectRangeReader(this, this.key(key), this.describe(key));
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
    } catch (error) {
      throw this.storeError(error, `deleting ${this.describe(key)}`);
    }
  }

  /** Multipart uploads under the prefix never completed or aborted (an importer killed mid-pack leaves one). */
  async unfinishedUploads(): Promise<UnfinishedUpload[]> {
    const uploads: UnfinishedUpload[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      let reply;
      try {
        reply = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: this.prefix, ...(keyMarker ? { KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker } : {}) }));
      } catch (error) {
        throw this.storeError(error, `listing the unfinished uploads of ${this.location}`);
      }
      for (const upload of reply.Uploads ?? []) {
        const key = upload.Key!.slice(this.prefix.length);
        uploads.push({
          key,
          started: upload.Initiated ?? new Date(0),
          abort: async () => {
            try {
              await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key!, UploadId: upload.UploadId! }));
            } catch (error) {
              if (errorName(error) !== 'NoSuchUpload') throw this.storeError(error, `aborting the upload of ${this.describe(key)}`);
            }
          },
        });
      }
      keyMarker = reply.IsTruncated ? reply.NextKeyMarker : undefined;
      uploadIdMarker = reply.NextUploadIdMarker;
    } while (keyMarker);
    return uploads;
  }

  async isEmpty(): Promise<boolean> {
    try {
      const reply = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 }));
      return (reply.KeyCount ?? reply.Contents?.length ?? 0) === 0;
    } catch (error) {
      throw this.storeError(error, `listing ${this.location}`);
    }
  }

  /** Destroys the client: a failed request's sockets would keep the process alive for a minute. */
  async close(): Promise<void> {
    this.client.destroy();
  }

  /** One line for what went wrong at the store: credentials, bucket, endpoint, or the store's own words. */
  storeError(error: unknown, doing: string): Error {
    if (error instanceof StoreUnavailable || error instanceof RepositoryCorrupt) return error;
    const name = errorName(error);
    const status = httpStatus(error);
    const code = networkCode(error);
    const endpoint = this.endpoint ?? 'the configured S3 endpoint';
    const attempts = (error as { $metadata?: { attempts?: number } }).$metadata?.attempts ?? 1;
    const tried = attempts > 1 ? `, ${attempts} attempts` : '';
    if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'AccessDenied' || status === 403) {
      return new StoreUnavailable(`${this.location}: the S3 store at ${endpoint} refused the credentials (${name ?? status})`,
        'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the shared credentials file and AWS_PROFILE)', { cause: error });
    }
    if (name === 'NoSuchBucket') {
      return new StoreUnavailable(`${this.location}: bucket ${this.bucket} does not exist at ${endpoint}`, 'create the bucket, or check the URI and the endpoint (--s3-endpoint, AWS_ENDPOINT_URL)', { cause: error });
    }
    if (name === 'CredentialsProviderError') {
      return new StoreUnavailable(`${this.location}: no S3 credentials found`, 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials', { cause: error });
    }
    if (code !== undefined || name === 'TimeoutError' || name === 'RequestTimeout') {
      return new StoreUnavailable(`${this.location}: cannot reach the S3 endpoint ${endpoint} (${code ?? name}${tried})`, 'check --s3-endpoint or AWS_ENDPOINT_URL, and that the store is up', { cause: error });
    }
    const message = error instanceof Error ? error.message : String(error);
    return new StoreUnavailable(`${this.location}: ${doing} failed (${name ?? 'error'}${status ? ` ${status}` : ''}: ${message.split('\n')[0]}${tried})`, `check the S3 store at ${endpoint} and its logs`, { cause: error });
  }
}

/**
 * A large object written in parts: a single PUT when it stays below one part, else a multipart
 * upload (parts of 8 MiB, two in flight) that becomes visible only when completed.
 */
class MultipartUpload implements ObjectUpload {
  private part = Buffer.allocUnsafe(PART_BYTES);
  private filled = 0;
  private uploadId?: Promise<string>;
  private readonly parts: Array<Promise<{ PartNumber: number; ETag: string }>> = [];
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly storage: S3Storage, private readonly key: string, private readonly path: string) {}

  async write(chunk: Buffer): Promise<void> {
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(PART_BYTES - this.filled, chunk.length - at);
      chunk.copy(this.part, this.filled, at, at + take);
      this.filled += take;
      at += take;
      if (this.filled === PART_BYTES) await this.sendPart();
    }
  }

  private async sendPart(): Promise<void> {
    const body = this.part.subarray(0, this.filled);
    this.part = Buffer.allocUnsafe(PART_BYTES);
    this.filled = 0;
    this.uploadId ??= this.guarded(() => this.storage.client.send(new CreateMultipartUploadCommand({ Bucket: this.storage.bucket, Key: this.key }))).then((reply) => reply.UploadId!);
    const partNumber = this.parts.length + 1;
    const sent = this.uploadId.then(async (uploadId) => {
      const reply = await this.guarded(() => this.storage.client.send(new UploadPartCommand({ Bucket: this.storage.bucket, Key: this.key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length })));
      return { PartNumber: partNumber, ETag: reply.ETag! };
    });
    this.parts.push(sent);
    const tracked = sent.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
    tracked.catch(() => {}); // seen by finish() (or abort)
    while (this.inFlight.size >= PARTS_IN_FLIGHT) await Promise.race(this.inFlight);
  }

  async finish(): Promise<void> {
    if (!this.uploadId) {
      const body = this.part.subarray(0, this.filled);
      await this.guarded(() => this.storage.client.send(new PutObjectCommand({ Bucket: this.storage.bucket, Key: this.key, Body: body, ContentLength: body.length })));
      this.part = Buffer.alloc(0);
      return;
    }
    if (this.filled > 0) await this.sendPart();
    const parts = await Promise.all(this.parts);
    const uploadId = await this.uploadId;
    await this.guarded(() => this.storage.client.send(new CompleteMultipartUploadCommand({ Bucket: this.storage.bucket, Key: this.key, UploadId: uploadId, MultipartUpload: { Parts: parts } })));
    this.part = Buffer.alloc(0);
  }

  async abort(): Promise<void> {
    this.part = Buffer.alloc(0);
    const uploadId = await this.uploadId?.catch(() => undefined);
    if (uploadId === undefined) return;
    await Promise.allSettled(this.parts);
    await this.storage.client.send(new AbortMultipartUploadCommand({ Bucket: this.storage.bucket, Key: this.key, UploadId: uploadId })).catch(() => {});
  }

  private async guarded<T>(request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (error) {
      throw this.storage.storeError(error, `uploading ${this.path}`);
    }
  }
}

/** AWS_REGION / AWS_DEFAULT_REGION, else the shared config's region (as the SDK reads it), else us-east-1. */
function regionProvider(): () => Promise<string> {
  let region: Promise<string> | undefined;
  return () => (region ??= (async () => {
    const fromEnvironment = process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION;
    if (fromEnvironment) return fromEnvironment;
    const probe = new S3Client({});
    try {
      return await probe.config.region();
    } catch {
      return 'us-east-1';
    } finally {
      probe.destroy();
    }
  })());
}
