// Turning away a connection beyond the server's cap with a reason the client can print: the
// greeting, then NBD_REP_ERR_POLICY with the reason for each option, then close. Costs a few
// bytes and a short deadline; past a handful of refusals at once, sockets are just closed.
import type { Socket } from 'node:net';
import * as P from './protocol.js';

/** Refusals answered at once; beyond, a connection is closed without a word. */
const MAX_REFUSING = 8;
/** A refused client has this long to read the reason and go. */
const REFUSAL_DEADLINE_MS = 5_000;
/** Options answered with the reason before the connection is closed. */
const MAX_ANSWERS = 8;
const MAX_OPTION_BYTES = 64 * 1024;

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
  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(P.NBDMAGIC, 0);
  greeting.writeBigUInt64BE(P.IHAVEOPT, 8);
  greeting.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
  socket.write(greeting);
  // Every option gets the reason (a client takes a refused STRUCTURED_REPLY as "not supported"
  // and goes on to NBD_OPT_GO, whose refusal it reports), up to a few options.
  let pending = Buffer.alloc(0);
  let skip = 0;
  let answered = 0;
  let greeted = false;
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    if (!greeted) {
      if (pending.length < 4) return;
      pending = pending.subarray(4); // the client's flags
      greeted = true;
    }
    for (;;) {
      const skipped = Math.min(skip, pending.length);
      pending = pending.subarray(skipped);
      skip -= skipped;
      if (skip > 0 || pending.length < 16) return;
      const option = pending.readUInt32BE(8);
      skip = pending.readUInt32BE(12);
      pending = pending.subarray(16);
      if (option === P.OPT_EXPORT_NAME || skip > MAX_OPTION_BYTES || ++answered > MAX_ANSWERS) {
        socket.destroy(); // NBD_OPT_EXPORT_NAME has no error reply
        return;
      }
      if (option === P.OPT_ABORT) {
        socket.end(optionReply(option, P.REP_ACK, Buffer.alloc(0)));
        return;
      }
      socket.write(optionReply(option, P.REP_ERR_POLICY, Buffer.from(reason, 'utf8')));
    }
  });
}

function optionReply(option: number, type: number, message: Buffer): Buffer {
  const reply = Buffer.alloc(20 + message.length);
  reply.writeBigUInt64BE(P.OPT_REPLY_MAGIC, 0);
  reply.writeUInt32BE(option, 8);
  reply.writeUInt32BE(type >>> 0, 12);
  reply.writeUInt32BE(message.length, 16);
  message.copy(reply, 20);
  return reply;
}
