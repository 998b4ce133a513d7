// Turning away a connection beyond the server's cap with a reason the client can print: the
// greeting, then NBD_REP_ERR_POLICY with the reason for each option, then close. Costs a few
// bytes and a short deadline; past a handful of refusals at once, sockets are just closed.
import type { Socket } from 'node:net';
import * as P from './protocol.js';
import { MAX_OPTION_BYTES } from './handshake.js';
import { CLIENT_FLAGS_BYTES, decodeOptionHeader, encodeGreeting, encodeOptionReply, OPTION_HEADER_BYTES } from './wire.js';

/** Refusals answered at once; beyond, a connection is closed without a word. */
const MAX_REFUSING = 8;
/** A refused client has this long to read the reason and go. */
const REFUSAL_DEADLINE_MS = 5_000;
/** Options answered with the reason before the connection is closed. */
const MAX_ANSWERS = 8;

export function refuseConnection(socket: Socket, refusing: Set<Socket>, reason: string): void {
  if (refusing.size >= MAX_REFUSING) {
    socket.destroy();
    return;
  }
  refusing.add(socket);
  const timer = setTimeout(() => socket.destroy(), REFUSAL_DEADLINE_MS);
  socket.on('close', () => {
    clearTimeout(timer);
    refusing.delete(socket);
  });
  socket.write(encodeGreeting(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES));
  // Every option gets the reason (a client takes a refused STRUCTURED_REPLY as "not supported"
  // and goes on to NBD_OPT_GO, whose refusal it reports), up to a few options.
  let pending = Buffer.alloc(0);
  let skip = 0;
  let answered = 0;
  let greeted = false;
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    if (!greeted) {
      if (pending.length < CLIENT_FLAGS_BYTES) return;
      pending = pending.subarray(CLIENT_FLAGS_BYTES);
      greeted = true;
    }
    for (;;) {
      const skipped = Math.min(skip, pending.length);
      pending = pending.subarray(skipped);
      skip -= skipped;
      if (skip > 0 || pending.length < OPTION_HEADER_BYTES) return;
      const header = decodeOptionHeader(pending);
      if (!header) {
        socket.destroy(); // not an option: the client is out of step
        return;
      }
      const { option } = header;
      skip = header.length;
      pending = pending.subarray(OPTION_HEADER_BYTES);
      if (option === P.OPT_EXPORT_NAME || skip > MAX_OPTION_BYTES || ++answered > MAX_ANSWERS) {
        socket.destroy(); // NBD_OPT_EXPORT_NAME has no error reply
        return;
      }
      if (option === P.OPT_ABORT) {
        socket.end(encodeOptionReply(option, P.REP_ACK));
        return;
      }
      socket.write(encodeOptionReply(option, P.REP_ERR_POLICY, Buffer.from(reason, 'utf8')));
    }
  });
}
