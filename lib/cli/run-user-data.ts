// `lazyboot run --user-data FILE`: the file checked on the host before the boot, a NoCloud seed
// disk built in a temp dir of its own (vmm/cloud-init-seed.ts) and attached, and once the agent
// answers, a wait until cloud-init in the guest has finished with it, so the command sees what
// user-data did. --hostname and --ssh-key also go into the seed's meta-data (local-hostname,
// public-keys: cloud-init applies them, the key for the image's default user); both are applied
// through the agent afterwards as for any image (they win over user-data).
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { registerCleanup } from '../base/cleanup.js';
import { LazybootError, UsageError } from '../base/errors.js';
import type { LazyVm } from '../launch.js';
import type { Personalization } from './run-personalize.js';
import { buildSeedDisk, seedDiskArgs, SEED_MAX_USER_DATA } from '../../vmm/cloud-init-seed.js';
import { WAIT_FOR_CLOUD_INIT } from '../../guest/cloud-init-script.js';

/** The first line of every kind of user data cloud-init accepts (YAML, scripts, includes, MIME, jinja). */
const USER_DATA_START = /^(#cloud-config|#!|#include|#cloud-boothook|#part-handler|#cloud-config-archive|## template: jinja|Content-Type:|MIME-Version:)/;

/** The guest cannot take the seed: no cloud-init, or cloud-init did not read it. */
export class CloudInitUnavailable extends LazybootError {}

export interface SeedDisk {
  readonly qemuArgs: readonly string[];
  /** Removes the seed's temp dir (idempotent). */
  remove(): Promise<void>;
}

/** Reads and checks the user-data file; every problem is a one-line UsageError. */
export async function readUserData(file: string): Promise<Buffer> {
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    throw new UsageError(`--user-data ${file}: ${error.code === 'ENOENT' ? 'no such file' : error.message}`, 'give a cloud-init user-data file, e.g. a #cloud-config YAML');
  });
  if (!info.isFile()) throw new UsageError(`--user-data ${file} is not a file`, 'give a cloud-init user-data file, e.g. a #cloud-config YAML');
  if (info.size > SEED_MAX_USER_DATA) throw new UsageError(`--user-data ${file} is ${info.size} bytes, more than the seed's ${SEED_MAX_USER_DATA}`, 'fetch large files from the user-data instead, or use --copy-in');
  const data = await readFile(file);
  const gzipped = data[0] === 0x1f && data[1] === 0x8b;
  if (!gzipped && !USER_DATA_START.test(data.toString('utf8'))) {
    const firstLine = data.toString('utf8').split('\n')[0]!.slice(0, 40);
    throw new UsageError(`--user-data ${file} is not cloud-init user data (it starts with ${JSON.stringify(firstLine)})`, 'start it with #cloud-config (YAML) or #! (a script)');
  }
  return data;
}

/** Builds the seed in a temp dir of its own, removed by remove() or at process teardown. */
export async function prepareSeedDisk(userData: Buffer, settings: Personalization): Promise<SeedDisk> {
  const dir = await mkdtemp(path.join(tmpdir(), 'lazyboot-seed-'));
  let removed: Promise<void> | undefined;
  const remove = () => (removed ??= rm(dir, { recursive: true, force: true }).then(() => unregister()));
  const unregister = registerCleanup({ release: remove });
  try {
    const image = await buildSeedDisk(dir, { userData, hostname: settings.hostname, publicKeys: settings.sshKey ? [settings.sshKey.key] : [] });
    return { qemuArgs: seedDiskArgs(image), remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

/**
 * Waits until cloud-init in the guest is done with the seed; returns its status line. Throws
 * CloudInitUnavailable when the guest has no cloud-init or cloud-init did not run (the user-data
 * would silently do nothing). cloud-init's own `error` status is returned, not thrown: the
 * command may still be worth running, and the caller warns.
 */
export async function waitForCloudInit(vm: LazyVm, timeoutMs: number): Promise<string> {
  const result = await vm.exec('/bin/sh', ['-c', WAIT_FOR_CLOUD_INIT], { timeoutMs });
  const said = result.stdout.trim();
  if (said === 'no-cloud-init') {
    throw new CloudInitUnavailable('--user-data: the guest has no cloud-init', 'use an image that runs cloud-init, or --hostname/--ssh-key/--copy-in, which work through the agent');
  }
  const status = /^status:\s*(.+)$/.exec(said)?.[1]?.trim();
  if (!status) throw new CloudInitUnavailable(`--user-data: cannot read cloud-init's status in the guest (${said || result.stderr.trim() || `exit ${result.exitCode}`})`);
  if (status === 'disabled' || status === 'not run') {
    throw new CloudInitUnavailable(`--user-data: cloud-init in the guest did not run (status: ${status})`, 'enable the NoCloud datasource in the image (datasource_list) or check /var/log/cloud-init.log');
  }
  return status;
}
