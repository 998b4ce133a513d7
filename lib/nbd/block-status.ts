// The base:allocation answer to NBD_CMD_BLOCK_STATUS: a backend's extents turned into the
// descriptors one reply carries (contiguous from the request's offset, clipped to its end).
import type { Extent } from '../block/backend.js';
import * as P from './protocol.js';
import type { RequestHeader, StatusDescriptor } from './wire.js';

/** Block status descriptors per reply; the spec lets a server describe less than was asked. */
export const MAX_EXTENTS_PER_REPLY = 1024;

/**
 * Descriptors for [request.offset, request.offset + request.length): in order and contiguous from
 * the offset (the first gap ends the list); one only with NBD_CMD_FLAG_REQ_ONE. Empty when the
 * extents do not start at the offset. `coalesceBelow` > 0: see coalesceOne.
 */
export function statusDescriptors(request: Pick<RequestHeader, 'offset' | 'length' | 'flags'>, extents: readonly Extent[], coalesceBelow = 0): StatusDescriptor[] {
  const end = request.offset + request.length;
  const one = (request.flags & P.CMD_FLAG_REQ_ONE) !== 0;
  const descriptors: StatusDescriptor[] = [];
  let at = request.offset;
  for (const extent of extents) {
    const from = Math.max(at, extent.offset);
    const to = Math.min(end, extent.offset + extent.length);
    if (from !== at || to <= from) break;
    descriptors.push({ length: to - from, flags: (extent.hole ? P.STATE_HOLE : 0) | (extent.zero ? P.STATE_ZERO : 0) });
    at = to;
    if (at >= end || (one && coalesceBelow <= 0) || descriptors.length >= MAX_EXTENTS_PER_REPLY) break;
  }
  if (!one || descriptors.length <= 1) return descriptors;
  return [coalesceOne(descriptors, coalesceBelow)];
}

/**
 * The one descriptor a REQ_ONE client gets, grown over the following ones. QEMU asks one extent
 * per round trip: an image whose zero blocks alternate with data (64 KiB of zeros between files)
 * cost `qemu-img convert` from `repo serve` two round trips per zero run (16,386 block status
 * requests and 4,097 reads of 192 KiB for a 1 GiB image, against 1 and 512 of 2 MiB from
 * qemu-nbd on a file without holes). A descriptor's flags must hold for all of it, so the merged
 * flags are those every part has (a hole inside data is reported as data, which the spec allows:
 * the client then reads it and gets zeros, sent as a hole chunk). What is never merged away is a
 * hole or zero run of `below` bytes or more: it ends the descriptor and is reported as itself.
 */
function coalesceOne(descriptors: readonly StatusDescriptor[], below: number): StatusDescriptor {
  let { length, flags } = descriptors[0]!;
  /** The flags of the long parts taken in so far: these may not be lost. */
  let longFlags = length >= below ? flags : 0;
  for (let i = 1; i < descriptors.length; i++) {
    const next = descriptors[i]!;
    const merged = flags & next.flags;
    const nextLong = next.length >= below ? next.flags : 0;
    if (((longFlags | nextLong) & ~merged) !== 0) break;
    length += next.length;
    flags = merged;
    longFlags |= nextLong;
  }
  return { length, flags };
}
