// Text a person types on the command line, turned into the numbers the options take: durations
// and byte sizes. Only the CLI parses text; launch() and the VMM take numbers.
import { UsageError } from '../base/errors.js';

/** "300s", "5m", "1h", "90" (seconds), "500ms" → milliseconds. */
export function parseDurationMs(value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(value.trim());
  if (!match) throw new UsageError(`invalid duration ${JSON.stringify(value)}`, 'use e.g. 90s, 5m or 300');
  const scale = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? 's']!;
  return Math.round(Number(match[1]) * scale);
}

/** "8M", "512K", "1.5G", "0", "4096" (bytes) → bytes; K/M/G/T are powers of 1024, "MiB"/"MB" alike. */
export function parseSizeBytes(value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!match) throw new UsageError(`invalid size ${JSON.stringify(value)}`, 'use e.g. 8M, 512K or 0');
  const power = ' KMGT'.indexOf((match[2] || ' ').toUpperCase());
  return Math.round(Number(match[1]) * 1024 ** power);
}
