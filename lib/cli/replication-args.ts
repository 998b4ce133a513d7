// The replication pace as typed on the command line (`replicate`, `boot/run --replicate-to`).
import { UsageError } from '../base/errors.js';
import { parseDurationMs, parseSizeBytes } from './units.js';

/** "--interval 30s" → ms; a rate like "20M" → bytes per second (0 = unlimited). */
export function replicationArgs(interval: string, rate: string): { intervalMs: number; rate: number } {
  const intervalMs = parseDurationMs(interval);
  if (intervalMs < 100) throw new UsageError(`replication interval ${JSON.stringify(interval)} is too short`, 'use at least 100ms, e.g. 30s');
  let bytes: number;
  try {
    bytes = parseSizeBytes(rate.replace(/\/s$/i, ''));
  } catch {
    throw new UsageError(`invalid replication rate ${JSON.stringify(rate)}`, 'use bytes per second like 20M, 800K, or 0 for unlimited');
  }
  return { intervalMs, rate: bytes };
}

