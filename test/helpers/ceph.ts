// A throwaway single-node Ceph cluster (mon, one memstore OSD, radosgw) in a temp directory on free
// loopback ports, with an S3 user and its keys: for the S3 repository tests, benchmarks and the
// demo (scripts/ceph-cluster). Nothing is written outside the directory; stop() (or, as a last
// resort, process exit) ends every daemon it started. The recipe and its reasons: shared CEPH.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { registerCleanup } from '../../lib/base/cleanup.js';

/** Debian's packages that provide the daemons and tools used here (`.ci/run` installs them). */
export const CEPH_PACKAGES = ['ceph-mon', 'ceph-osd', 'radosgw', 'ceph-common'] as const;
const REQUIRED_TOOLS = ['ceph-mon', 'ceph-osd', 'radosgw', 'ceph', 'ceph-authtool', 'monmaptool', 'radosgw-admin'];

export interface CephClusterOptions {
  /** Parent of the cluster's directory (default: the system temp dir). */
  readonly parentDir?: string;
  /** Memstore capacity (RAM, used as data is stored). Default 8 GiB. */
  readonly storeBytes?: number;
  /** Progress lines (each step with its time). */
  readonly log?: (line: string) => void;
}

export interface CephCluster {
  readonly dir: string;
  /** `http://127.0.0.1:PORT` of the S3 gateway. */
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  /** Milliseconds from start() to a gateway that answers with the user created. */
  readonly startMs: number;
  /** The environment an S3 client (lazyboot, aws-cli) needs to reach this cluster as its user. */
  env(): Record<string, string>;
  /** Creates a bucket owned by the cluster's user. */
  createBucket(name: string): Promise<void>;
  /** Stops the S3 gateway only (the store stays), to test clients against a gone endpoint. */
  stopGateway(): Promise<void>;
  /** Starts the gateway again on the same port. */
  startGateway(): Promise<void>;
  /** The running gateway's request counters (its perf counters, read over its admin socket; zero at each start). */
  gatewayCounters(): Promise<GatewayCounters>;
  /** Process ids of the daemons running now. */
  pids(): number[];
  /** Stops every daemon (gateway, OSD, mon) and removes the directory. Idempotent. */
  stop(): Promise<void>;
}

/** Requests the S3 gateway has served since it started. */
export interface GatewayCounters {
  readonly requests: number;
  readonly gets: number;
  readonly getBytes: number;
}

/** A cluster that could not start, with the reason (and the log tail that tells it). */
export class CephStartFailed extends Error {}

const MiB = 1024 * 1024;
/** The pinned SDK would warn that its future releases need Node 22 (lazyboot pins it; see s3-storage.ts). */
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Fails with the reason when the Ceph tools are not installed (tests must not skip silently). */
export async function checkCephInstalled(): Promise<void> {
  const missing: string[] = [];
  for (const tool of REQUIRED_TOOLS) {
    const found = await execa('sh', ['-c', `command -v ${tool}`], { reject: false });
    if (found.exitCode !== 0) missing.push(tool);
  }
  if (missing.length > 0) {
    throw new CephStartFailed(`Ceph is not installed (missing ${missing.join(', ')}): apt-get install --no-install-recommends ${CEPH_PACKAGES.join(' ')} (as .ci/run does)`);
  }
}

function configText(dir: string, fsid: string, monPort: number, rgwPort: number, storeBytes: number): string {
  return `[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${monPort}]
mon initial members = a
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = ${dir}/keyring
run dir = ${dir}/run
crash dir = ${dir}/crash
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
mon data = ${dir}/mon/$id
osd data = ${dir}/osd/$id
osd objectstore = memstore
memstore device bytes = ${storeBytes}
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon data avail crit = 1
mon data avail warn = 2

[mon]
paxos propose interval = 0.05

[osd]
public addr = 127.0.0.1

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw gc obj min wait = 60
rgw gc processor period = 60
`;
}

/** One daemon started in the foreground (`-f`), in its own process group so Ctrl-C reaches us first. */
class Daemon {
  private exitCode?: number | null;
  readonly exited: Promise<void>;

  constructor(readonly name: string, private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      this.exitCode = code ?? (signal ? -1 : null);
      resolve();
    }));
  }

  get running(): boolean {
    return this.exitCode === undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** TERM, then KILL after `graceMs` (radosgw ignores TERM once the OSD is gone). */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const killed = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(killed);
  }

  killNow(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}

/** Starts a cluster; on any failure everything started so far is stopped and the reason thrown. */
export async function startCephCluster(options: CephClusterOptions = {}): Promise<CephCluster> {
  await checkCephInstalled();
  const started = Date.now();
  const log = options.log ?? (() => {});
  const step = (what: string) => log(`${((Date.now() - started) / 1000).toFixed(1)} s  ${what}`);
  const dir = await mkdtemp(join(options.parentDir ?? tmpdir(), 'lazyboot-ceph-'));
  const conf = join(dir, 'ceph.conf');
  const keyring = join(dir, 'keyring');
  const daemons: Daemon[] = [];
  let stopped: Promise<void> | undefined;

  const stopAll = (): Promise<void> => {
    stopped ??= (async () => {
      // The gateway first (it hangs on a gone OSD), then the OSD, then the monitor.
      for (const name of ['radosgw', 'ceph-osd', 'ceph-mon']) {
        await Promise.all(daemons.filter((d) => d.name === name).map((d) => d.stop()));
      }
      unregister();
      await rm(dir, { recursive: true, force: true });
    })();
    return stopped;
  };
  const unregister = registerCleanup({ release: stopAll, releaseSync: () => daemons.forEach((d) => d.killNow()) });

  const run = async (file: string, args: string[]): Promise<string> => {
    const result = await execa(file, args, { reject: false, timeout: 60_000, cwd: dir });
    if (result.exitCode !== 0 || result.timedOut) {
      throw new CephStartFailed(`${file} ${args.join(' ')} failed${result.timedOut ? ' (timed out after 60 s)' : ` (exit ${result.exitCode})`}: ${(result.stderr || result.stdout).trim().split('\n').slice(-3).join(' | ')}`);
    }
    return result.stdout;
  };
  const logTail = async (name: string): Promise<string> => {
    const text = await readFile(join(dir, 'log', `${name}.log`), 'utf8').catch(() => '');
    return text.trim().split('\n').slice(-5).join(' | ');
  };
  const startDaemon = async (file: string, args: string[], logName: string): Promise<Daemon> => {
    const child = spawn(file, ['-c', conf, ...args, '-f'], { cwd: dir, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => { if (stderr.length < 4096) stderr += chunk.toString(); });
    const daemon = new Daemon(file, child);
    daemons.push(daemon);
    await sleep(200);
    if (!daemon.running) throw new CephStartFailed(`${file} exited at once: ${stderr.trim() || await logTail(logName)}`);
    return daemon;
  };

  try {
    const [monPort, rgwPort] = [await freePort(), await freePort()];
    const fsid = randomUUID();
    for (const sub of ['run', 'crash', 'log', 'mon', 'osd/0']) await mkdir(join(dir, sub), { recursive: true });
    await writeFile(conf, configText(dir, fsid, monPort, rgwPort, options.storeBytes ?? 8 * 1024 * MiB));

    const keys: Array<[string, string[]]> = [
      ['mon.', ['--cap', 'mon', 'allow *']],
      ['client.admin', ['--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mgr', 'allow *']],
      ['osd.0', ['--cap', 'mon', 'allow profile osd', '--cap', 'osd', 'allow *', '--cap', 'mgr', 'allow profile osd']],
      ['client.rgw.a', ['--cap', 'mon', 'allow rw', '--cap', 'osd', 'allow rwx', '--cap', 'mgr', 'allow rw']],
    ];
    for (const [index, [name, caps]] of keys.entries()) {
      await run('ceph-authtool', [keyring, ...(index === 0 ? ['--create-keyring'] : []), '--gen-key', '-n', name, ...caps]);
    }
    // An explicit monmap: without it the mon names itself noname-a and clients hang.
    const monmap = join(dir, 'monmap');
    await run('monmaptool', ['--create', '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, '--fsid', fsid, monmap]);
    await run('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', keyring]);
    await startDaemon('ceph-mon', ['-i', 'a'], 'mon.a');
    step(`mon on 127.0.0.1:${monPort}`);

    const osdUuid = randomUUID();
    const osdId = (await run('ceph', ['-c', conf, '--connect-timeout', '30', 'osd', 'new', osdUuid])).trim();
    if (osdId !== '0') throw new CephStartFailed(`ceph osd new gave id ${JSON.stringify(osdId)}, expected 0`);
    await run('ceph-osd', ['-c', conf, '-i', '0', '--mkfs', '--osd-uuid', osdUuid]);
    await startDaemon('ceph-osd', ['-i', '0'], 'osd.0');
    step('osd.0 (memstore)');

    const gateway = async (): Promise<Daemon> => {
      const daemon = await startDaemon('radosgw', ['-n', 'client.rgw.a'], 'client.rgw.a');
      // With a bad frontend radosgw runs on without a listener: check it is alive while waiting.
      const deadline = Date.now() + 120_000;
      while (!(await portAnswers(rgwPort))) {
        if (!daemon.running) throw new CephStartFailed(`radosgw exited before it listened: ${await logTail('client.rgw.a')}`);
        if (Date.now() > deadline) throw new CephStartFailed(`radosgw did not listen on 127.0.0.1:${rgwPort} within 120 s: ${await logTail('client.rgw.a')}`);
        await sleep(100);
      }
      return daemon;
    };
    await gateway();
    step(`radosgw on 127.0.0.1:${rgwPort}`);

    const accessKeyId = `LZB${randomBytes(8).toString('hex').toUpperCase()}`;
    const secretAccessKey = randomBytes(24).toString('base64url');
    await run('radosgw-admin', ['-c', conf, 'user', 'create', '--uid', 'lazyboot', '--display-name', 'lazyboot tests', '--access-key', accessKeyId, '--secret-key', secretAccessKey]);
    step('S3 user created');
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    const region = 'us-east-1';
    const startMs = Date.now() - started;

    return {
      dir, endpoint, accessKeyId, secretAccessKey, region, startMs,
      env: () => ({ AWS_ENDPOINT_URL: endpoint, AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey, AWS_REGION: region }),
      async createBucket(name) {
        const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
        const client = new S3Client({ endpoint, region, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } });
        try {
          await client.send(new CreateBucketCommand({ Bucket: name }));
        } finally {
          client.destroy();
        }
      },
      async stopGateway() {
        await Promise.all(daemons.filter((d) => d.name === 'radosgw').map((d) => d.stop()));
      },
      async startGateway() {
        if (daemons.some((d) => d.name === 'radosgw' && d.running)) return;
        await gateway();
      },
      async gatewayCounters() {
        const dump = JSON.parse(await run('ceph', ['--admin-daemon', join(dir, 'run', 'client.rgw.a.asok'), 'perf', 'dump', 'rgw'])) as { rgw: { req: number; get: number; get_b: number } };
        return { requests: dump.rgw.req, gets: dump.rgw.get, getBytes: dump.rgw.get_b };
      },
      pids: () => daemons.filter((d) => d.running).map((d) => d.pid!),
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error instanceof CephStartFailed ? error : new CephStartFailed(`the Ceph cluster did not start: ${(error as Error).message}`, { cause: error });
  }
}

/** Runs `body` with a fresh cluster, always stopping it. */
export async function withCephCluster<T>(body: (cluster: CephCluster) => Promise<T>, options?: CephClusterOptions): Promise<T> {
  const cluster = await startCephCluster(options);
  try {
    return await body(cluster);
  } finally {
    await cluster.stop();
  }
}
