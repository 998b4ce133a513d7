// The NBD server's limit flags, shared by `repo serve` and `disk serve`: seconds and counts on the
// command line, checked here so that a bad value is one line, not a server that never times out.
import type { Argv } from 'yargs';
import { UsageError } from '../base/errors.js';
import { DEFAULT_LIMITS, type NbdServerLimits } from '../nbd/limits.js';

export interface ServerLimitArgs {
  'max-connections': number;
  'idle-timeout': number;
  'stall-timeout': number;
  'handshake-timeout': number;
}

export function serverLimitOptions<T>(y: Argv<T>, defaults: { idleTimeoutS: number; maxConnections: number; stallTimeoutS?: number }): Argv<T> {
  return y
    .option('max-connections', { type: 'number', default: defaults.maxConnections, describe: 'connections open at once; more are refused with a reason' })
    .option('idle-timeout', { type: 'number', default: defaults.idleTimeoutS, describe: 'close a connection idle this many seconds (0 = never)' })
    .option('stall-timeout', { type: 'number', default: defaults.stallTimeoutS ?? DEFAULT_LIMITS.stallTimeoutMs / 1000, describe: 'close a connection whose client has not read its replies for this many seconds (0 = never)' })
    .option('handshake-timeout', { type: 'number', default: DEFAULT_LIMITS.handshakeTimeoutMs / 1000, describe: 'seconds a client has to finish the NBD handshake' }) as Argv<T>;
}

function seconds(name: string, value: number, allowZero: boolean): number {
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0) || value > 86_400 * 365) {
    throw new UsageError(`invalid --${name} ${value}`, allowZero ? 'give seconds, 0 for never' : 'give a positive number of seconds');
  }
  return Math.round(value * 1000);
}

export function serverLimitsOf(args: ServerLimitArgs): NbdServerLimits {
  const max = args['max-connections'];
  if (!Number.isInteger(max) || max < 1 || max > 65_536) throw new UsageError(`invalid --max-connections ${max}`, 'give a whole number from 1 to 65536');
  return {
    maxConnections: max,
    idleTimeoutMs: seconds('idle-timeout', args['idle-timeout'], true),
    stallTimeoutMs: seconds('stall-timeout', args['stall-timeout'], true),
    handshakeTimeoutMs: seconds('handshake-timeout', args['handshake-timeout'], false),
  };
}
