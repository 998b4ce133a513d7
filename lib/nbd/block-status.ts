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
 * extents do not start at the offset.
 */
export function statusDescriptors(request: Pick<RequestHeader, 'offset' | 'length' | 'flags'>, extents: readonly Extent[]): StatusDescriptor[] {
  const end = request.offset + request.length;
  const descriptors: StatusDescriptor[] = [];
  let at = request.offset;
  for (const extent of extents) {
    const from = Math.max(at, extent.offset);
    const to = Math.min(end, extent.offset + extent.length);
    if (from !== at || to <= from) break;
    descriptors.push({ length: to - from, flags: (extent.hole ? P.STATE_HOLE : 0) | (extent.zero ? P.STATE_ZERO : 0) });
    at = to;
    if (at >= end || request.flags & P.CMD_FLAG_REQ_ONE || descriptors.length >= MAX_EXTENTS_PER_REPLY) break;
  }
  return descriptors;
}
