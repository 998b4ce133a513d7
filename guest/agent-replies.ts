// Splits the byte stream from the guest agent into parsed JSON replies. The agent marks
// guest-sync-delimited replies with a leading 0xFF byte; it carries no meaning past the handshake.
import type { AgentReply } from './agent-protocol.js';

const NEWLINE = 0x0a;
const SYNC_DELIMITER = 0xff;

export class AgentReplyReader {
  #pending: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns every complete reply they finish, skipping lines that are not JSON objects. */
  push(chunk: Buffer): AgentReply[] {
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    const replies: AgentReply[] = [];
    let start = 0;
    for (let end = this.#pending.indexOf(NEWLINE); end !== -1; end = this.#pending.indexOf(NEWLINE, start)) {
      const bytes = this.#pending.subarray(start, end).filter((byte) => byte !== SYNC_DELIMITER);
      const line = Buffer.from(bytes).toString('utf8').trim();
      start = end + 1;
      if (!line) continue;
      try {
        const value: unknown = JSON.parse(line);
        if (typeof value === 'object' && value !== null) replies.push(value as AgentReply);
      } catch {
        // Garbage from before the handshake (a previous client's half-read line): ignore it.
      }
    }
    this.#pending = this.#pending.subarray(start);
    return replies;
  }
}
