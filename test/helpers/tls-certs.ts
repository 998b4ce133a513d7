// Test helper: x509 credentials made with openssl, laid out as QEMU's tls-creds-x509 directory
// (ca-cert.pem; server-cert.pem, server-key.pem; client-cert.pem, client-key.pem), and a PSK file
// as QEMU's tls-creds-psk reads it (keys.psk: username:hexkey). GnuTLS (QEMU, libnbd) checks the
// extensions QEMU documents: CA:TRUE with keyCertSign on the CA, serverAuth / clientAuth on the
// others, and the server's address in subjectAltName.
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';

async function openssl(args: string[], cwd: string): Promise<void> {
  await execa('openssl', args, { cwd });
}

async function signedCertificate(dir: string, name: 'server' | 'client', extensions: string): Promise<void> {
  await writeFile(join(dir, `${name}.ext`), extensions);
  await openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-subj', `/CN=lazyboot test ${name}`, '-out', `${name}.csr`], dir);
  await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '2', '-sha256', '-extfile', `${name}.ext`, '-out', `${name}-cert.pem`], dir);
}

/** Makes a CA and a server and client certificate in `dir`; another CA in `dir/other-ca` for refusals. */
export async function makeX509Credentials(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const ca = async (at: string): Promise<void> => {
    await mkdir(at, { recursive: true });
    await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=lazyboot test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], at);
  };
  await ca(dir);
  await signedCertificate(dir, 'server', 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await signedCertificate(dir, 'client', 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n');
  await ca(join(dir, 'other-ca'));
  for (const file of ['server-key.pem', 'client-key.pem', 'ca-key.pem']) await chmod(join(dir, file), 0o600);
}

/** A keys.psk with one user; returns the path. */
export async function makePskFile(dir: string, user = 'lazyboot'): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'keys.psk');
  await writeFile(path, `${user}:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return path;
}
