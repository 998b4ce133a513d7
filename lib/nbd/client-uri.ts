// Parses NBD URIs (nbd+unix:///EXPORT?socket=PATH, nbd://HOST[:PORT]/EXPORT, and the TLS forms
// nbds:// and nbds+unix://) into a connect target. TLS credentials may ride in the URI as libnbd
// writes them: ?tls-certificates=DIR, or ?tls-psk-file=FILE[&tls-username=USER].
import { UsageError } from '../base/errors.js';

export interface NbdTlsTarget {
  /** x509 directory: ca-cert.pem (and client-cert.pem, client-key.pem). */
  readonly x509Dir?: string;
  readonly pskFile?: string;
  readonly pskUser?: string;
}

export interface NbdTarget {
  readonly socketPath?: string;
  readonly host?: string;
  readonly port?: number;
  /** Export named in the URI path ('' when none). */
  readonly exportName: string;
  /** Present for nbds:// and nbds+unix://: the server must speak TLS. */
  readonly tls?: NbdTlsTarget;
}

const FORMS = 'use nbd+unix:///EXPORT?socket=PATH, nbd://HOST:PORT/EXPORT, or nbds://… / nbds+unix://… for TLS';

export function isNbdUri(text: string): boolean {
  return /^nbds?(\+unix|\+tcp)?:\/\//.test(text);
}

export function parseNbdUri(text: string): NbdTarget {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`not an NBD URI: ${text}`, FORMS);
  }
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  const secure = url.protocol.startsWith('nbds');
  const tls = secure ? tlsOf(url) : undefined;
  const withTls = tls ? { tls } : {};
  if (url.protocol === 'nbd+unix:' || url.protocol === 'nbds+unix:') {
    const socketPath = url.searchParams.get('socket');
    if (!socketPath) throw new UsageError(`${text} has no ?socket=PATH`, 'write nbd+unix:///EXPORT?socket=/path/to.sock');
    return { socketPath, exportName, ...withTls };
  }
  if (['nbd:', 'nbd+tcp:', 'nbds:', 'nbds+tcp:'].includes(url.protocol)) {
    return { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 10809, exportName, ...withTls };
  }
  throw new UsageError(`not an NBD URI: ${text}`, FORMS);
}

function tlsOf(url: URL): NbdTlsTarget {
  const x509Dir = url.searchParams.get('tls-certificates') ?? undefined;
  const pskFile = url.searchParams.get('tls-psk-file') ?? undefined;
  // libnbd takes the PSK user from the URI's user part (nbds://USER@HOST/…).
  const pskUser = url.searchParams.get('tls-username') ?? (url.username ? decodeURIComponent(url.username) : undefined);
  return { ...(x509Dir ? { x509Dir } : {}), ...(pskFile ? { pskFile } : {}), ...(pskUser ? { pskUser } : {}) };
}

/** The same server with another export name, as a URI (TLS credentials kept). */
export function formatNbdUri(target: NbdTarget, exportName = target.exportName): string {
  const name = encodeURIComponent(exportName).replace(/%40/g, '@').replace(/%3A/g, ':');
  const scheme = target.tls ? 'nbds' : 'nbd';
  const query: string[] = [];
  if (target.socketPath) query.push(`socket=${target.socketPath}`);
  if (target.tls?.x509Dir) query.push(`tls-certificates=${target.tls.x509Dir}`);
  if (target.tls?.pskFile) query.push(`tls-psk-file=${target.tls.pskFile}`);
  if (target.tls?.pskUser) query.push(`tls-username=${target.tls.pskUser}`);
  const search = query.length ? `?${query.join('&')}` : '';
  if (target.socketPath) return `${scheme}+unix:///${name}${search}`;
  const host = target.host?.includes(':') ? `[${target.host}]` : target.host;
  return `${scheme}://${host}:${target.port}/${name}${search}`;
}

/**
 * Adds TLS credentials from a command-line flag to nbds:// URIs that name none (plain nbd:// and
 * directories are returned unchanged).
 */
export function withTlsCredentials(uri: string, credentials: NbdTlsTarget | undefined): string {
  if (!credentials || !/^nbds(\+unix|\+tcp)?:\/\//.test(uri)) return uri;
  const target = parseNbdUri(uri);
  if (target.tls?.x509Dir || target.tls?.pskFile) return uri;
  return formatNbdUri({ ...target, tls: { ...credentials } });
}
