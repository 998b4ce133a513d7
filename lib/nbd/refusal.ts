// Turning away a connection beyond the server's cap with a reason the client can print: the
// greeting, then NBD_REP_ERR_POLICY with the reason for its first option, then close. Costs a few
// bytes and a short deadline; past a handful of refusals at once, sockets are just closed.
import type { Socket } from 'node:net';
import * as P from './protocol.js';

/** Refusals answered at once; beyond, a connection is closed without a word. */
const MAX_REFUSING = 8;
/** A refused client has this long to send its first option and go. */
const REFUSAL_DEADLINE_MS = 5_000;

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
  // Client flags (4 bytes) and the first option's header (16): all that is needed to answer.
  let received = Buffer.alloc(0);
  let answered = false;
  socket.on('data', (chunk: Buffer) => {
    if (answered) return; // anything more is discarded until the client closes
    received = Buffer.concat([received, chunk.subarray(0, 20 - received.length)]);
    if (received.length < 20) return;
    answered = true;
    const option = received.readUInt32BE(8);
    if (option === P.OPT_EXPORT_NAME) {
      socket.end(); // this option has no error reply
      return;
    }
    const message = Buffer.from(reason, 'utf8');
    const reply = Buffer.alloc(20 + message.length);
    reply.writeBigUInt64BE(P.OPT_REPLY_MAGIC, 0);
    reply.writeUInt32BE(option, 8);
    reply.writeUInt32BE(P.REP_ERR_POLICY >>> 0, 12);
    reply.writeUInt32BE(message.length, 16);
    message.copy(reply, 20);
    socket.end(reply);
  });
}
