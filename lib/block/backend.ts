// The one interface every layer of the block path speaks (modelled on nbdkit's plugin/filter face).
// A layer wraps another BlockBackend and passes on what it does not handle.
import { LazybootError } from '../base/errors.js';

/** What a backend can do: asked once, never guessed by callers. */
export interface BlockCapabilities {
  readonly write: boolean;
  readonly flush: boolean;
  readonly trim: boolean;
  readonly writeZeroes: boolean;
  /** blockStatus() reports real holes/zeros (else it answers "all data"). */
  readonly extents: boolean;
  /** Several connections may share this backend safely (NBD_FLAG_CAN_MULTI_CONN). */
  readonly multiConn: boolean;
}

/** Largest single request a backend takes (the NBD server advertises it as the maximum block size). */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/** Size constraints a client must respect (NBD_INFO_BLOCK_SIZE). */
export interface BlockSizeConstraints {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

/** One run of bytes with the same allocation state. */
export interface Extent {
  readonly offset: number;
  readonly length: number;
  /** Not allocated in this backend (NBD_STATE_HOLE). */
  readonly hole: boolean;
  /** Reads as zeros (NBD_STATE_ZERO). */
  readonly zero: boolean;
}

export interface WriteOptions {
  /** Force unit access: durable before the call resolves. */
  readonly fua?: boolean;
}

export interface BlockBackend {
  /** Size in bytes. */
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly constraints: BlockSizeConstraints;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer, options?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number, options?: WriteOptions): Promise<void>;
  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Extents covering at least [offset, offset+length) in order; may stop early but covers >= 1 byte. */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
  /**
   * Optional: the same extents, when the backend holds them in memory, answered at once. A server
   * then replies in the same turn: an awaited answer waits behind the work of the reads in flight,
   * which `qemu-img convert` pays on its serial chain of status requests (one came back after ~140
   * µs instead of ~6 µs while two 2 MiB reads were being served).
   */
  blockStatusNow?(offset: number, length: number): Extent[];
  /**
   * For a client that asks for one extent at a time (NBD_CMD_FLAG_REQ_ONE): holes and zero runs
   * shorter than this many bytes are reported inside the data around them (lib/nbd/block-status.ts).
   * Unset or 0: every extent exactly.
   */
  readonly coalesceStatusBelowBytes?: number;
  close(): Promise<void>;
}

/** Errno-like codes the NBD server maps onto NBD error values. */
export type BlockErrorCode = 'EPERM' | 'EIO' | 'ENOMEM' | 'EINVAL' | 'ENOSPC' | 'EOVERFLOW' | 'ENOTSUP' | 'ESHUTDOWN';

/**
 * A failed block operation; `code` travels to the NBD client, `message` to the log (and, when it
 * reaches the CLI, to the user: it is a LazybootError like every error a user may see, with a
 * hint when the layer that threw it knows what to do).
 */
export class BlockError extends LazybootError {
  constructor(readonly code: BlockErrorCode, message: string, options?: ErrorOptions & { hint?: string }) {
    super(message, options?.hint, options);
  }
}
