// `--copy-in HOST:GUEST` and `--copy-out GUEST:HOST`, parsed and checked on the host before
// anything boots, so a typo costs no boot.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from '../base/errors.js';

export interface CopySpec {
  readonly host: string;
  readonly guest: string;
}

/** Splits at the first ':' (HOST:GUEST for copy-in) or the last (GUEST:HOST for copy-out): guest paths are absolute. */
function split(spec: string, flag: string, guestFirst: boolean): CopySpec {
  const at = guestFirst ? spec.indexOf(':') : spec.lastIndexOf(':');
  const [first, second] = at === -1 ? [spec, ''] : [spec.slice(0, at), spec.slice(at + 1)];
  const [guest, host] = guestFirst ? [first, second] : [second, first];
  const example = guestFirst ? '--copy-out /tmp/result.xml:./result.xml' : '--copy-in ./build.tar:/tmp/build.tar';
  if (!host || !guest) throw new UsageError(`${flag} ${JSON.stringify(spec)} is not ${guestFirst ? 'GUEST:HOST' : 'HOST:GUEST'}`, `write e.g. ${example}`);
  if (!guest.startsWith('/')) throw new UsageError(`${flag} ${JSON.stringify(spec)}: the guest path ${guest} is not absolute`, `write e.g. ${example}`);
  return { host, guest };
}

export function parseCopyIn(spec: string): CopySpec {
  const parsed = split(spec, '--copy-in', false);
  if (!existsSync(parsed.host) || !statSync(parsed.host).isFile()) {
    throw new UsageError(`--copy-in: ${parsed.host} is not a file on the host`, 'give an existing file (pack a directory with tar first)');
  }
  // A guest directory (trailing '/') receives the file under its own name.
  return parsed.guest.endsWith('/') ? { ...parsed, guest: parsed.guest + path.basename(parsed.host) } : parsed;
}

export function parseCopyOut(spec: string): CopySpec {
  const parsed = split(spec, '--copy-out', true);
  const host = parsed.host.endsWith('/') || (existsSync(parsed.host) && statSync(parsed.host).isDirectory()) ? path.join(parsed.host, path.basename(parsed.guest)) : parsed.host;
  const dir = path.dirname(path.resolve(host));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--copy-out: the host directory ${dir} does not exist`, 'create it first, or name another');
  return { host, guest: parsed.guest };
}
