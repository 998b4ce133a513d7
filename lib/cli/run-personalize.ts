// `lazyboot run --hostname NAME --ssh-key FILE [--ssh-user USER]`: per-target settings, checked on
// the host before the boot and applied through the agent once it answers (images without
// cloud-init; the scripts are in guest/personalize-script.ts).
import { readFileSync } from 'node:fs';
import { UsageError } from '../base/errors.js';
import { LazybootError } from '../base/errors.js';
import type { LazyVm } from '../launch.js';
import { AUTHORIZE_SSH_KEY, SET_HOSTNAME } from '../../guest/personalize-script.js';

export interface Personalization {
  readonly hostname?: string;
  readonly sshKey?: { readonly user: string; readonly key: string; readonly file: string };
}

/** The guest refused a setting (the user does not exist, a read-only root, …). */
export class PersonalizationFailed extends LazybootError {
  constructor(what: string, detail: string) {
    super(`could not set ${what} in the guest: ${detail}`, 'check the value (and that the user exists in the image)');
  }
}

const HOSTNAME = /^(?=.{1,63}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$/;
const USER = /^[a-z_][a-z0-9_-]*\$?$/;
const PUBLIC_KEY = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?$/;

export function parsePersonalization(options: { hostname?: string; sshKey?: string; sshUser: string }): Personalization {
  if (options.hostname !== undefined && !HOSTNAME.test(options.hostname)) {
    throw new UsageError(`--hostname ${JSON.stringify(options.hostname)} is not a host name`, 'use letters, digits and inner hyphens, at most 63 characters');
  }
  if (!USER.test(options.sshUser)) throw new UsageError(`--ssh-user ${JSON.stringify(options.sshUser)} is not a user name`, 'use e.g. root or debian');
  let sshKey: Personalization['sshKey'];
  if (options.sshKey !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.sshKey, 'utf8');
    } catch (error) {
      throw new UsageError(`--ssh-key ${options.sshKey}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message}`, 'give a public key file, e.g. ~/.ssh/id_ed25519.pub');
    }
    const key = text.trim();
    if (!PUBLIC_KEY.test(key)) throw new UsageError(`--ssh-key ${options.sshKey} is not one OpenSSH public key line`, 'give the .pub file (never the private key)');
    sshKey = { user: options.sshUser, key, file: options.sshKey };
  }
  return { hostname: options.hostname, sshKey };
}

/** Applies the settings through the agent; returns one line per setting applied. */
export async function personalize(vm: LazyVm, settings: Personalization): Promise<string[]> {
  const done: string[] = [];
  if (settings.hostname !== undefined) {
    const result = await vm.exec('/bin/sh', ['-c', SET_HOSTNAME, 'lazyboot-hostname', settings.hostname]);
    if (result.exitCode !== 0) throw new PersonalizationFailed(`the hostname ${settings.hostname}`, (result.stderr || result.stdout).trim() || `exit ${result.exitCode}`);
    done.push(result.stdout.trim());
  }
  if (settings.sshKey) {
    const result = await vm.exec('/bin/sh', ['-c', AUTHORIZE_SSH_KEY, 'lazyboot-ssh-key', settings.sshKey.user, settings.sshKey.key]);
    if (result.exitCode !== 0) throw new PersonalizationFailed(`the ssh key for ${settings.sshKey.user}`, (result.stdout || result.stderr).trim() || `exit ${result.exitCode}`);
    done.push(result.stdout.trim());
  }
  return done;
}
