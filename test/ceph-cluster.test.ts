// The throwaway Ceph cluster the S3 repository tests stand on (test/helpers/ceph.ts): it starts,
// its gateway answers S3 with the user's keys, and stop() leaves no daemon and no directory.
import test from 'ava';
import { access } from 'node:fs/promises';
import { S3Client, PutObjectCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { startCephCluster } from './helpers/ceph.js';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('a throwaway Ceph cluster serves S3 with its user\'s keys and stops without leftovers', async (t) => {
  t.timeout(240_000);
  const cluster = await startCephCluster();
  let pids: number[] = [];
  try {
    await cluster.createBucket('smoke');
    const client = new S3Client({ endpoint: cluster.endpoint, region: cluster.region, forcePathStyle: true, credentials: { accessKeyId: cluster.accessKeyId, secretAccessKey: cluster.secretAccessKey } });
    try {
      await client.send(new PutObjectCommand({ Bucket: 'smoke', Key: 'hello', Body: 'hello ceph' }));
      const got = await client.send(new GetObjectCommand({ Bucket: 'smoke', Key: 'hello' }));
      t.is(await got.Body!.transformToString(), 'hello ceph');
    } finally {
      client.destroy();
    }
    pids = cluster.pids();
    t.is(pids.length, 3, 'mon, osd and radosgw run');
    t.true(pids.every(alive));
  } finally {
    await cluster.stop();
  }
  t.false(pids.some(alive), 'every daemon is gone');
  await t.throwsAsync(access(cluster.dir), { code: 'ENOENT' });
});
