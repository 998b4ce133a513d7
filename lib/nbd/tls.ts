// TLS for NBD (NBD_OPT_STARTTLS) with QEMU's credential layouts: an x509 directory as for
// `--object tls-creds-x509,dir=DIR` (ca-cert.pem, server-cert.pem, server-key.pem; a client uses
// ca-cert.pem and, when present, client-cert.pem and client-key.pem), or a pre-shared key file as
// for `tls-creds-psk` (lines `username:hexkey`).
import { readFile } from 'node:fs/promises';
import { isIP, type Socket } from 'node:net';
import { join } from 'node:path';
import { TLSSocket, createSecureContext, connect as tlsConnect, type ConnectionOptions, type SecureContext } from 'node:tls';
import { TlsCredentialsInvalid } from './errors.js';

export interface ServerTls {
  /** For log lines and the URI printed: what authenticates clients. */
  readonly describe: string;
  readonly secureContext: SecureContext;
  /** x509: client certificates signed by the CA are required (QEMU's verify-peer=on default). */
  readonly requestCert: boolean;
  readonly pskCallback?: (socket: TLSSocket, identity: string) => Buffer | null;
}

export interface ClientTls {
  readonly options: ConnectionOptions;
}

export interface ServerTlsSource {
  /** x509 directory (ca-cert.pem, server-cert.pem, server-key.pem). */
  readonly x509Dir?: string;
  /** PSK file (`username:hexkey` lines). */
  readonly pskFile?: string;
}

/** PSK: TLS 1.2 cipher suites GnuTLS (QEMU, libnbd) and OpenSSL (Node) share. */
const PSK_CIPHERS = 'ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256';

async function readCredential(dir: string, file: string, role: string): Promise<Buffer> {
  try {
    return await readFile(join(dir, file));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw new TlsCredentialsInvalid(`cannot read ${join(dir, file)} (${code})`, `a ${role} x509 directory holds ${role === 'server' ? 'ca-cert.pem, server-cert.pem and server-key.pem' : 'ca-cert.pem (and client-cert.pem, client-key.pem)'}`);
  }
}

async function readOptional(dir: string, file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(join(dir, file));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TlsCredentialsInvalid(`cannot read ${join(dir, file)} (${(error as NodeJS.ErrnoException).code})`, 'check its permissions');
  }
}

/** Parses a `username:hexkey` file; lines that are empty or start with # are skipped. */
export async function readPskFile(path: string): Promise<Map<string, Buffer>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new TlsCredentialsInvalid(`cannot read ${path} (${(error as NodeJS.ErrnoException).code})`, 'give a keys.psk file of username:hexkey lines');
  }
  const keys = new Map<string, Buffer>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const match = /^([^:]+):([0-9a-fA-F]+)$/.exec(line);
    if (!match || match[2]!.length % 2 !== 0) throw new TlsCredentialsInvalid(`${path} line ${i + 1} is not username:hexkey`, 'write one username:hexkey per line (e.g. from `psktool`)');
    keys.set(match[1]!, Buffer.from(match[2]!, 'hex'));
  }
  if (keys.size === 0) throw new TlsCredentialsInvalid(`${path} holds no key`, 'write one username:hexkey per line');
  return keys;
}

export async function loadServerTls(source: ServerTlsSource): Promise<ServerTls> {
  if (!source.x509Dir === !source.pskFile) throw new TlsCredentialsInvalid('give exactly one of an x509 directory or a PSK file', 'use --tls-creds DIR or --tls-psk FILE');
  if (source.pskFile) {
    const keys = await readPskFile(source.pskFile);
    return {
      describe: `TLS with pre-shared keys (${source.pskFile})`,
      secureContext: createSecureContext({ ciphers: PSK_CIPHERS, maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' }),
      requestCert: false,
      pskCallback: (_socket, identity) => keys.get(identity) ?? null,
    };
  }
  const dir = source.x509Dir!;
  const [ca, cert, key] = await Promise.all([
    readCredential(dir, 'ca-cert.pem', 'server'),
    readCredential(dir, 'server-cert.pem', 'server'),
    readCredential(dir, 'server-key.pem', 'server'),
  ]);
  try {
    return { describe: `TLS with x509 certificates (${dir}; client certificates required)`, secureContext: createSecureContext({ ca, cert, key, minVersion: 'TLSv1.2' }), requestCert: true };
  } catch (error) {
    throw new TlsCredentialsInvalid(`the x509 credentials in ${dir} cannot be used: ${(error as Error).message}`, 'check that server-key.pem belongs to server-cert.pem', { cause: error });
  }
}

/** Turns an accepted socket into the server end of a TLS session (after NBD_OPT_STARTTLS). */
export function startServerTls(socket: Socket, tls: ServerTls): TLSSocket {
  return new TLSSocket(socket, {
    isServer: true,
    secureContext: tls.secureContext,
    requestCert: tls.requestCert,
    rejectUnauthorized: tls.requestCert,
    ...(tls.pskCallback ? { pskCallback: tls.pskCallback } : {}),
  } as ConstructorParameters<typeof TLSSocket>[1]);
}

export interface ClientTlsSource {
  readonly x509Dir?: string;
  readonly pskFile?: string;
  /** PSK identity (default: the file's first user). */
  readonly pskUser?: string;
}

export async function loadClientTls(source: ClientTlsSource): Promise<ClientTls> {
  if (source.pskFile) {
    const keys = await readPskFile(source.pskFile);
    const identity = source.pskUser ?? [...keys.keys()][0]!;
    const psk = keys.get(identity);
    if (!psk) throw new TlsCredentialsInvalid(`${source.pskFile} has no key for ${JSON.stringify(identity)}`, 'name a user the file holds');
    return { options: { ciphers: PSK_CIPHERS, maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2', checkServerIdentity: () => undefined, pskCallback: () => ({ psk, identity }) } };
  }
  if (!source.x509Dir) throw new TlsCredentialsInvalid('an nbds:// repository needs TLS credentials', 'add --tls-creds DIR (the CA as DIR/ca-cert.pem) or ?tls-certificates=DIR to the URI');
  const dir = source.x509Dir;
  const ca = await readCredential(dir, 'ca-cert.pem', 'client');
  const cert = await readOptional(dir, 'client-cert.pem');
  const key = await readOptional(dir, 'client-key.pem');
  return { options: { ca, ...(cert && key ? { cert, key } : {}), minVersion: 'TLSv1.2' } };
}

/**
 * The client end of a TLS session on a connected socket (after the server's STARTTLS ACK).
 * `host` is checked against the certificate; over a unix socket there is no host name to check,
 * and the CA's signature is what authenticates the server.
 */
export function startClientTls(socket: Socket, tls: ClientTls, host: string | undefined): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = tlsConnect({
      ...tls.options,
      socket,
      ...(host ? { host, ...(isIP(host) ? {} : { servername: host }) } : { checkServerIdentity: () => undefined }),
    });
    const onError = (error: Error): void => reject(error);
    secure.once('error', onError);
    secure.once('secureConnect', () => {
      secure.off('error', onError);
      resolve(secure);
    });
  });
}

/** 127.0.0.0/8, ::1, localhost: only this machine can connect. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  return bare === 'localhost' || bare === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare) || /^::ffff:127\./.test(bare);
}
