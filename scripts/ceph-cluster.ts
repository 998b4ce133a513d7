// `scripts/ceph-cluster [--bucket NAME] [-- COMMAND ARGS…]`: starts a throwaway single-node Ceph
// (mon, OSD, radosgw) in a temp directory, creates an S3 user and a bucket, prints the variables
// an S3 client needs, then waits for Ctrl-C (or runs COMMAND with them set and exits with its
// status). The cluster is always stopped and its directory removed, also on Ctrl-C.
import { execa } from 'execa';
import { installSignalTeardown } from '../lib/base/cleanup.js';
import { startCephCluster } from '../test/helpers/ceph.js';

const USAGE = `usage: scripts/ceph-cluster [--bucket NAME] [--store-size GIB] [-- COMMAND ARGS...]
Starts a single-node Ceph cluster with the S3 gateway on free loopback ports, creates an S3 user
and the bucket (default "lazyboot"), prints AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_REGION, then runs until Ctrl-C; with a COMMAND, runs it with those
variables set and stops the cluster when it exits (exit status: the command's).`;

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const dashes = argv.indexOf('--');
  const options = dashes >= 0 ? argv.slice(0, dashes) : argv;
  const command = dashes >= 0 ? argv.slice(dashes + 1) : [];
  let bucket = 'lazyboot';
  let storeGiB = 8;
  for (let i = 0; i < options.length; i++) {
    const option = options[i]!;
    if (option === '--help' || option === '-h') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    } else if (option === '--bucket' && options[i + 1]) {
      bucket = options[++i]!;
    } else if (option === '--store-size' && /^[1-9][0-9]*$/.test(options[i + 1] ?? '')) {
      storeGiB = Number(options[++i]);
    } else {
      process.stderr.write(`ceph-cluster: unknown or incomplete option ${JSON.stringify(option)}\n${USAGE}\n`);
      return 2;
    }
  }
  installSignalTeardown(); // Ctrl-C stops the daemons (registered by startCephCluster) and exits 130
  const log = (line: string): void => void process.stderr.write(`ceph-cluster: ${line}\n`);
  const cluster = await startCephCluster({ log, storeBytes: storeGiB * 1024 ** 3 });
  try {
    await cluster.createBucket(bucket);
    log(`up in ${(cluster.startMs / 1000).toFixed(1)} s; bucket ${bucket}; directory ${cluster.dir}`);
    const env = cluster.env();
    if (command.length === 0) {
      for (const [key, value] of Object.entries(env)) process.stdout.write(`export ${key}=${value}\n`);
      process.stdout.write(`# repository: s3://${bucket}/PREFIX   (Ctrl-C stops the cluster)\n`);
      await new Promise(() => {}); // until a signal: installSignalTeardown stops the cluster
    }
    const result = await execa(command[0]!, command.slice(1), { stdio: 'inherit', reject: false, env: { ...env, LAZYBOOT_S3_BUCKET: bucket } });
    return result.exitCode ?? 1;
  } finally {
    await cluster.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`ceph-cluster: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
