// What one NBD server lets its clients hold: connections, time and memory. Clients are not trusted
// (see README, "Security model"), so every resource a client can make the server hold has a bound.

export interface NbdServerLimits {
  /** Connections open at once (handshaking or transmitting); more are refused with a reason. */
  readonly maxConnections?: number;
  /** The whole handshake must end within this (an absolute deadline, not an inactivity timer). */
  readonly handshakeTimeoutMs?: number;
  /** A connection with nothing in flight and no traffic for this long is closed; 0 = never. */
  readonly idleTimeoutMs?: number;
  /** A connection whose unsent output has not moved for this long is closed; 0 = never. */
  readonly stallTimeoutMs?: number;
  /**
   * Bytes of read replies and write payloads one connection may hold at once (one request larger
   * than this is served alone). Each connection has its own: a client that stops reading holds at
   * most this much and never delays another client.
   */
  readonly connectionBufferBytes?: number;
  /** Options one handshake may send before the connection is closed. */
  readonly maxOptions?: number;
}

export type ResolvedLimits = Required<NbdServerLimits>;

export const DEFAULT_LIMITS: ResolvedLimits = {
  maxConnections: 64,
  handshakeTimeoutMs: 30_000,
  idleTimeoutMs: 0,
  stallTimeoutMs: 60_000,
  // nbdcopy keeps 64 requests of 256 KiB in flight per connection over 4 connections: 8 MiB each
  // lets it run at full speed on a local socket while 64 connections hold at most 512 MiB.
  connectionBufferBytes: 8 * 1024 * 1024,
  // libnbd and QEMU send a handful; `nbdinfo --list` sends one NBD_OPT_INFO per export.
  maxOptions: 1024,
};

export function resolveLimits(limits: NbdServerLimits = {}): ResolvedLimits {
  const resolved = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(limits) as Array<[keyof ResolvedLimits, number | undefined]>) {
    if (value !== undefined) resolved[key] = value;
  }
  return resolved;
}
