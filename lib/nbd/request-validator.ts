// Whether a request may reach the backend, decided in one place from the request alone and what
// the connection negotiated: a pure function (no socket, no backend call), tested on its own. The
// rules are the NBD spec's (proto.md, "Request types" and "Command flags"); the capability check
// (may this export be written, trimmed, zeroed) is written here and nowhere else.
import type { BlockCapabilities } from '../block/backend.js';
import * as P from './protocol.js';
import { commandFlagNames, commandName, type RequestHeader } from './wire.js';

/** What the connection agreed on, as far as validating a request needs it. */
export interface NegotiatedExport {
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  /** The largest READ or WRITE payload (the maximum block size sent in NBD_INFO_BLOCK_SIZE). */
  readonly maximumPayload: number;
  /** The transmission flags sent to the client (FUA, FAST_ZERO are allowed only when sent). */
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  /** base:allocation was selected with NBD_OPT_SET_META_CONTEXT: NBD_CMD_BLOCK_STATUS may be sent. */
  readonly baseAllocation: boolean;
}

/** Why a request is refused: the NBD error value for the client, and a line for its log. */
export interface Refusal {
  readonly errno: number;
  readonly message: string;
}

type CheckedRequest = Pick<RequestHeader, 'type' | 'flags' | 'offset' | 'length'>;

const KNOWN_FLAGS = P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE | P.CMD_FLAG_DF | P.CMD_FLAG_REQ_ONE | P.CMD_FLAG_FAST_ZERO;

/** The commands each flag other than FUA belongs to (FUA is valid on every command once offered). */
const FLAG_COMMANDS: ReadonlyArray<readonly [number, readonly number[]]> = [
  [P.CMD_FLAG_NO_HOLE, [P.CMD_WRITE_ZEROES]],
  [P.CMD_FLAG_FAST_ZERO, [P.CMD_WRITE_ZEROES]],
  [P.CMD_FLAG_DF, [P.CMD_READ]],
  [P.CMD_FLAG_REQ_ONE, [P.CMD_BLOCK_STATUS]],
];

const SERVED = new Set([P.CMD_READ, P.CMD_WRITE, P.CMD_FLUSH, P.CMD_TRIM, P.CMD_WRITE_ZEROES, P.CMD_BLOCK_STATUS]);
const WRITES = new Set([P.CMD_WRITE, P.CMD_TRIM, P.CMD_WRITE_ZEROES]);

function refuse(errno: number, message: string): Refusal {
  return { errno, message };
}

/**
 * A refusal, or undefined when the request may run. NBD_CMD_DISC is not a request to validate
 * (it ends the connection). The order fixes which reason wins when several apply: a payload too
 * large is EINVAL even on a read-only export, so that the connection can skip it and stay in step.
 */
export function validateRequest(request: CheckedRequest, session: NegotiatedExport): Refusal | undefined {
  const { type, flags, offset, length } = request;
  const name = commandName(type);
  if (!SERVED.has(type)) return refuse(P.NBD_EINVAL, `unsupported command ${type}`);

  if ((type === P.CMD_READ || type === P.CMD_WRITE) && length > session.maximumPayload) {
    const what = type === P.CMD_READ ? 'read' : 'write';
    return refuse(P.NBD_EINVAL, `${what} of ${length} bytes exceeds the maximum ${session.maximumPayload}`);
  }

  if (WRITES.has(type)) {
    const { capabilities } = session;
    if (!capabilities.write) return refuse(P.NBD_EPERM, 'export is read-only');
    const supported = (type !== P.CMD_TRIM || capabilities.trim) && (type !== P.CMD_WRITE_ZEROES || capabilities.writeZeroes);
    if (!supported) return refuse(P.NBD_EINVAL, `${name} not supported by this export`);
  }

  if (flags & ~KNOWN_FLAGS) return refuse(P.NBD_EINVAL, `${name} with unknown flags ${commandFlagNames(flags & ~KNOWN_FLAGS)}`);
  for (const [flag, commands] of FLAG_COMMANDS) {
    if (flags & flag && !commands.includes(type)) return refuse(P.NBD_EINVAL, `flag ${commandFlagNames(flag)} is not allowed on ${name}`);
  }
  if (flags & P.CMD_FLAG_FUA && !(session.transmissionFlags & P.TFLAG_SEND_FUA)) return refuse(P.NBD_EINVAL, 'flag FUA was not offered by this export');
  if (flags & P.CMD_FLAG_FAST_ZERO && !(session.transmissionFlags & P.TFLAG_SEND_FAST_ZERO)) return refuse(P.NBD_EINVAL, 'flag FAST_ZERO was not offered by this export');
  if (flags & P.CMD_FLAG_DF && !session.structuredReplies) return refuse(P.NBD_EINVAL, 'flag DF needs structured replies');

  if (type === P.CMD_FLUSH) {
    return offset !== 0 || length !== 0 ? refuse(P.NBD_EINVAL, `${name} must have offset and length 0 (got ${offset}+${length})`) : undefined;
  }
  if (type === P.CMD_BLOCK_STATUS && !session.baseAllocation) return refuse(P.NBD_EINVAL, 'no meta context negotiated');
  if (offset + length > session.size || (type === P.CMD_BLOCK_STATUS && length === 0)) {
    // ENOSPC tells a writer the export cannot grow; a reader gets EINVAL (NBD spec, error values).
    return refuse(WRITES.has(type) ? P.NBD_ENOSPC : P.NBD_EINVAL, `range ${offset}+${length} is beyond the end of the export (${session.size})`);
  }
  return undefined;
}
