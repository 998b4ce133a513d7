// The request validator on its own: one table of requests and what the NBD spec says a server
// answers them with, against a read-only and a writable export (no socket, no backend).
import test from 'ava';
import * as P from '../lib/nbd/protocol.js';
import { validateRequest, type NegotiatedExport } from '../lib/nbd/request-validator.js';

const MiB = 1024 * 1024;
const readOnly: NegotiatedExport = {
  size: 64 * MiB,
  capabilities: { write: false, flush: false, trim: false, writeZeroes: false, extents: true, multiConn: true },
  maximumPayload: 32 * MiB,
  transmissionFlags: P.TFLAG_HAS_FLAGS | P.TFLAG_READ_ONLY | P.TFLAG_CAN_MULTI_CONN,
  structuredReplies: true,
  baseAllocation: true,
};
const writable: NegotiatedExport = {
  ...readOnly,
  capabilities: { write: true, flush: true, trim: true, writeZeroes: true, extents: true, multiConn: false },
  transmissionFlags: P.TFLAG_HAS_FLAGS | P.TFLAG_SEND_FLUSH | P.TFLAG_SEND_FUA | P.TFLAG_SEND_TRIM | P.TFLAG_SEND_WRITE_ZEROES,
};
const simpleOnly: NegotiatedExport = { ...writable, structuredReplies: false, baseAllocation: false };
const noTrim: NegotiatedExport = { ...writable, capabilities: { ...writable.capabilities, trim: false, writeZeroes: false } };

interface Row {
  readonly why: string;
  readonly on: NegotiatedExport;
  readonly type: number;
  readonly flags?: number;
  readonly offset?: number;
  readonly length?: number;
  /** undefined: the request may run. */
  readonly errno: number | undefined;
  readonly message?: RegExp;
}

const rows: Row[] = [
  // Commands.
  { why: 'a read inside the export', on: readOnly, type: P.CMD_READ, length: 4096, errno: undefined },
  { why: 'NBD_CMD_CACHE is not served', on: writable, type: P.CMD_CACHE, length: 4096, errno: P.NBD_EINVAL, message: /unsupported command 5/ },
  { why: 'an unknown command', on: writable, type: 99, length: 4096, errno: P.NBD_EINVAL, message: /unsupported command 99/ },
  // The capability check.
  { why: 'a write to a read-only export', on: readOnly, type: P.CMD_WRITE, length: 4096, errno: P.NBD_EPERM, message: /read-only/ },
  { why: 'a trim to a read-only export', on: readOnly, type: P.CMD_TRIM, length: 4096, errno: P.NBD_EPERM },
  { why: 'write-zeroes to a read-only export', on: readOnly, type: P.CMD_WRITE_ZEROES, length: 4096, errno: P.NBD_EPERM },
  { why: 'a trim where trim is not offered', on: noTrim, type: P.CMD_TRIM, length: 4096, errno: P.NBD_EINVAL, message: /NBD_CMD_TRIM not supported/ },
  { why: 'write-zeroes where it is not offered', on: noTrim, type: P.CMD_WRITE_ZEROES, length: 4096, errno: P.NBD_EINVAL, message: /NBD_CMD_WRITE_ZEROES not supported/ },
  { why: 'a write to a writable export', on: writable, type: P.CMD_WRITE, length: 4096, errno: undefined },
  { why: 'a trim where it is offered', on: writable, type: P.CMD_TRIM, length: 4096, errno: undefined },
  // Payload size: refused before the read-only check, so the connection can skip a write's payload.
  { why: 'a read beyond the maximum payload', on: readOnly, type: P.CMD_READ, length: 32 * MiB + 1, errno: P.NBD_EINVAL, message: /exceeds the maximum/ },
  { why: 'a write beyond the maximum payload, read-only export', on: readOnly, type: P.CMD_WRITE, length: 33 * MiB, errno: P.NBD_EINVAL, message: /exceeds the maximum/ },
  { why: 'a trim larger than the maximum payload (no payload)', on: writable, type: P.CMD_TRIM, length: 48 * MiB, errno: undefined },
  // Flags.
  { why: 'an unknown flag bit', on: writable, type: P.CMD_WRITE, flags: 1 << 7, length: 512, errno: P.NBD_EINVAL, message: /unknown flags 0x80/ },
  { why: 'FUA on a write where FUA is offered', on: writable, type: P.CMD_WRITE, flags: P.CMD_FLAG_FUA, length: 512, errno: undefined },
  { why: 'FUA on a flush where FUA is offered (valid on every command)', on: writable, type: P.CMD_FLUSH, flags: P.CMD_FLAG_FUA, errno: undefined },
  { why: 'FUA where it was not offered', on: readOnly, type: P.CMD_READ, flags: P.CMD_FLAG_FUA, length: 512, errno: P.NBD_EINVAL, message: /FUA was not offered/ },
  { why: 'NO_HOLE on write-zeroes', on: writable, type: P.CMD_WRITE_ZEROES, flags: P.CMD_FLAG_NO_HOLE, length: 4096, errno: undefined },
  { why: 'NO_HOLE on a write', on: writable, type: P.CMD_WRITE, flags: P.CMD_FLAG_NO_HOLE, length: 4096, errno: P.NBD_EINVAL, message: /NO_HOLE is not allowed on NBD_CMD_WRITE/ },
  { why: 'FAST_ZERO never offered by this server', on: writable, type: P.CMD_WRITE_ZEROES, flags: P.CMD_FLAG_FAST_ZERO, length: 4096, errno: P.NBD_EINVAL, message: /FAST_ZERO was not offered/ },
  { why: 'FAST_ZERO on a read', on: writable, type: P.CMD_READ, flags: P.CMD_FLAG_FAST_ZERO, length: 4096, errno: P.NBD_EINVAL, message: /FAST_ZERO is not allowed on NBD_CMD_READ/ },
  { why: 'DF on a structured read', on: readOnly, type: P.CMD_READ, flags: P.CMD_FLAG_DF, length: 4096, errno: undefined },
  { why: 'DF without structured replies', on: simpleOnly, type: P.CMD_READ, flags: P.CMD_FLAG_DF, length: 4096, errno: P.NBD_EINVAL, message: /DF needs structured replies/ },
  { why: 'DF on block status', on: readOnly, type: P.CMD_BLOCK_STATUS, flags: P.CMD_FLAG_DF, length: 4096, errno: P.NBD_EINVAL, message: /DF is not allowed on NBD_CMD_BLOCK_STATUS/ },
  { why: 'REQ_ONE on block status', on: readOnly, type: P.CMD_BLOCK_STATUS, flags: P.CMD_FLAG_REQ_ONE, length: 4096, errno: undefined },
  { why: 'REQ_ONE on a read', on: readOnly, type: P.CMD_READ, flags: P.CMD_FLAG_REQ_ONE, length: 4096, errno: P.NBD_EINVAL, message: /REQ_ONE is not allowed on NBD_CMD_READ/ },
  // Flush.
  { why: 'a flush with offset and length 0', on: writable, type: P.CMD_FLUSH, errno: undefined },
  { why: 'a flush with an offset', on: writable, type: P.CMD_FLUSH, offset: 4096, errno: P.NBD_EINVAL, message: /offset and length 0/ },
  { why: 'a flush with a length', on: writable, type: P.CMD_FLUSH, length: 4096, errno: P.NBD_EINVAL, message: /offset and length 0/ },
  // Block status needs its meta context.
  { why: 'block status without base:allocation', on: simpleOnly, type: P.CMD_BLOCK_STATUS, length: 4096, errno: P.NBD_EINVAL, message: /no meta context/ },
  { why: 'block status of length 0', on: readOnly, type: P.CMD_BLOCK_STATUS, length: 0, errno: P.NBD_EINVAL },
  // Ranges.
  { why: 'a read that ends at the end', on: readOnly, type: P.CMD_READ, offset: 64 * MiB - 4096, length: 4096, errno: undefined },
  { why: 'a read past the end', on: readOnly, type: P.CMD_READ, offset: 64 * MiB - 4096, length: 8192, errno: P.NBD_EINVAL, message: /beyond the end/ },
  { why: 'a read far past the end (offset near 2^64)', on: readOnly, type: P.CMD_READ, offset: 2 ** 64 - 4096, length: 4096, errno: P.NBD_EINVAL },
  { why: 'a write past the end: ENOSPC', on: writable, type: P.CMD_WRITE, offset: 64 * MiB - 10, length: 100, errno: P.NBD_ENOSPC },
  { why: 'write-zeroes past the end: ENOSPC', on: writable, type: P.CMD_WRITE_ZEROES, offset: 64 * MiB, length: 1, errno: P.NBD_ENOSPC },
];

for (const row of rows) {
  test(`validateRequest: ${row.why} → ${row.errno === undefined ? 'runs' : `errno ${row.errno}`}`, (t) => {
    const refusal = validateRequest({ type: row.type, flags: row.flags ?? 0, offset: row.offset ?? 0, length: row.length ?? 0 }, row.on);
    t.is(refusal?.errno, row.errno, refusal?.message);
    if (row.message) t.regex(refusal!.message, row.message);
  });
}

test('validateRequest is pure: the same request gets the same answer, the export is not changed', (t) => {
  const frozen = Object.freeze({ ...writable, capabilities: Object.freeze({ ...writable.capabilities }) });
  const request = { type: P.CMD_WRITE, flags: P.CMD_FLAG_NO_HOLE, offset: 0, length: 512 };
  t.deepEqual(validateRequest(request, frozen), validateRequest(request, frozen));
  t.deepEqual(frozen, writable);
});
