// Range reads of one object of an S3 repository (S3Storage.openRange): how the COR device reads
// straight from the store. The repository's image reader asks for ranges of up to 4 MiB (the
// gateway's cost is per request: S3_READ_SHAPE), and at most RANGE_GETS_IN_FLIGHT of them run at
// once per storage. A request that fails for a transient reason (5xx, SlowDown, a connection reset
// or refused, a timeout) is retried by the SDK's standard retry strategy (S3_ATTEMPTS); a range
// whose body breaks half-way (which the SDK cannot retry: its reply had begun) is asked again here
// for the rest, with the same bound. What still fails becomes S3Storage's one-line error.
import { setTimeout as sleep } from 'node:timers/promises';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { RepositoryCorrupt } from '../errors.js';
import { exactInteger } from '../exact-integer.js';
import type { S3Storage } from './s3-storage.js';
import { errorName, httpStatus } from './s3-error-fields.js';
import type { RangeReader, ReadShape } from './storage.js';

/**
 * Attempts per request, transient failures retried by the SDK with exponential back-off and full
 * jitter (base 50 ms, 1 s after SlowDown): a gateway restart or a dropped connection is ridden
 * through, a store that is down fails in well under a second (then the caller's own policy holds:
 * failover to another repository, the fill's pause). The SDK's default is 3.
 */
export const S3_ATTEMPTS = 5;
/**
 * Ranges of up to 4 MiB: Ceph's gateway costs ~2 ms of CPU per request and ~7 ms per MiB, the SDK
 * ~3 ms per request (shared CEPH.md), so 64 KiB ranges spend most of it on requests. Blocks up to
 * 256 KiB apart in a pack share a request (reading the gap costs less than another request).
 */
export const S3_READ_SHAPE: ReadShape = { maxRangeBytes: 4 * 1024 * 1024, joinGapBytes: 256 * 1024 };
/**
 * Range GETs in flight at once per storage (more only queue at a gateway that is CPU-bound); the
 * COR device has two, its own and its fetch worker's.
 */
const RANGE_GETS_IN_FLIGHT = 8;

/** Range GETs of one object. */
export class ObjectRangeReader implements RangeReader {
  constructor(private readonly storage: S3Storage, private readonly key: string, private readonly path: string) {}

  async readInto(target: Buffer, targetOffset: number, length: number, position: number): Promise<void> {
    if (length === 0) return;
    let done = 0;
    await this.storage.rangeSlots.take();
    try {
      // The SDK retries the request; a body that breaks after it began (a reset mid-transfer) is
      // asked again for its rest, with the same bound and back-off.
      for (let attempt = 1; done < length; attempt++) {
        try {
          done += await this.readOnce(target, targetOffset + done, length - done, position + done);
          break;
        } catch (error) {
          if (!(error instanceof BodyBroken)) throw this.mapped(error, position);
          done += error.received;
          if (attempt >= S3_ATTEMPTS) throw this.mapped(error.cause, position);
          await sleep(Math.random() * 50 * 2 ** attempt);
        }
      }
    } finally {
      this.storage.rangeSlots.give();
    }
    if (done < length) throw new RepositoryCorrupt(this.path, `is truncated (no data at offset ${exactInteger(position + done)})`);
  }

  /** One range GET into `target`; the bytes it gave (fewer only at the object's end). */
  private async readOnce(target: Buffer, targetOffset: number, length: number, position: number): Promise<number> {
    const reply = await this.storage.client.send(new GetObjectCommand({ Bucket: this.storage.bucket, Key: this.key, Range: `bytes=${position}-${position + length - 1}` }));
    let done = 0;
    try {
      for await (const chunk of reply.Body as AsyncIterable<Uint8Array>) {
        const take = Math.min(chunk.length, length - done);
        target.set(take === chunk.length ? chunk : chunk.subarray(0, take), targetOffset + done);
        done += take;
      }
    } catch (error) {
      throw new BodyBroken(done, error);
    }
    return done;
  }

  private mapped(error: unknown, position: number): Error {
    const name = errorName(error);
    if (name === 'NoSuchKey') return new RepositoryCorrupt(this.path, 'is missing', { cause: error });
    if (name === 'InvalidRange' || httpStatus(error) === 416) return new RepositoryCorrupt(this.path, `is truncated (no data at offset ${exactInteger(position)})`, { cause: error });
    return this.storage.storeError(error, `reading ${this.path}`);
  }

  async close(): Promise<void> {}
}

/** A range GET's body that failed after `received` bytes had arrived. */
class BodyBroken extends Error {
  constructor(readonly received: number, cause: unknown) {
    super(`the reply broke off after ${received} bytes`, { cause });
  }
}

/** A counting semaphore over the storage's range GETs: take() waits while all are in flight. */
export class RangeSlots {
  private held = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit = RANGE_GETS_IN_FLIGHT) {}

  async take(): Promise<void> {
    if (this.held < this.limit) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  give(): void {
    const next = this.waiting.shift();
    if (next) next(); // the slot passes on as held
    else this.held--;
  }
}
