// Parses NBD URIs (nbd+unix:///EXPORT?socket=PATH, nbd://HOST[:PORT]/EXPORT) into a connect target.
import { UsageError } from '../errors.js';

export interface NbdTarget {
  readonly socketPath?: string;
  readonly host?: string;
  readonly port?: number;
  /** Export named in the URI path ('' when none). */
  readonly exportName: string;
}

export function isNbdUri(text: string): boolean {
  return /^nbd(\+unix|\+tcp)?:\/\//.test(text);
}

export function parseNbdUri(text: string): NbdTarget {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`not an NBD URI: ${text}`, 'use nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT');
  }
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (url.protocol === 'nbd+unix:') {
    const socketPath = url.searchParams.get('socket');
    if (!socketPath) throw new UsageError(`${text} has no ?socket=PATH`, 'write nbd+unix:///EXPORT?socket=/path/to.sock');
    return { socketPath, exportName };
  }
  if (url.protocol === 'nbd:' || url.protocol === 'nbd+tcp:') {
    return { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 10809, exportName };
  }
  throw new UsageError(`not an NBD URI: ${text}`, 'use nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT');
}

/** The same server with another export name, as a URI. */
export function formatNbdUri(target: NbdTarget, exportName = target.exportName): string {
  const name = encodeURIComponent(exportName).replace(/%40/g, '@').replace(/%3A/g, ':');
  if (target.socketPath) return `nbd+unix:///${name}?socket=${target.socketPath}`;
  return `nbd://${target.host}:${target.port}/${name}`;
}
