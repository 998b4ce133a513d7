// Stateless repository servers over one bucket, against a real Ceph RGW (one cluster for the
// file): two `repo serve --repo s3://…` serve the same images, a COR device reading through
// `--from A --from B` survives A's SIGKILL mid-read byte for byte (failover, lib/fetch/failover.ts),
// an image imported while they run is served by both with no restart, and A, restarted, serves
// again. A server holds only bounded caches (Repository's manifests, export-provider.ts's image
// backends; the pack indexes grow with the bucket's contents): nothing it loses when killed.
import test from 'ava';
import { execa } from 'execa';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { startCephCluster, type CephCluster } from './helpers/ceph.js';
import { inTempDir, serveRepositoryCli } from './helpers/repo-cli.js';
import { makeImage, nbdcopyTo } from './cor-fixtures.js';
import { openCorDevice, type FetchErrorEvent } from '../lib/cor/device.js';

const BUCKET = 'lazyboot-servers';
let cluster: CephCluster | undefined;

test.before(async () => {
  cluster = await startCephCluster();
  await cluster.createBucket(BUCKET);
  Object.assign(process.env, cluster.env()); // this process's repository and the servers reach the store
});

test.after.always(async () => {
  await cluster?.stop();
});

test('two repo serve over one bucket: one SIGKILLed mid-read, the other completes it byte-identical; both serve a new import; the killed one restarts and serves', (t) =>
  inTempDir(async (dir) => {
    t.timeout(300_000);
    const repo = `s3://${BUCKET}/fleet-${randomBytes(3).toString('hex')}`;
    const image = await makeImage(dir, 'demo', { size: 512 * 65536, repoDir: repo }); // 32 MiB, ~380 data blocks
    const socketA = join(dir, 'a.sock');
    let serverA = await serveRepositoryCli(repo, socketA);
    const serverB = await serveRepositoryCli(repo, join(dir, 'b.sock'));
    const events: FetchErrorEvent[] = [];
    try {
      const device = await openCorDevice({ image: 'demo', disk: join(dir, 'disk.raw'), from: [serverA.uri, serverB.uri] });
      device.on('fetch-error', (event: FetchErrorEvent) => events.push(event));
      let fetchedAtKill: number;
      try {
        const copy = nbdcopyTo(device.uri, join(dir, 'copy.raw'));
        while (device.stats().fetchedBlocks < 20) await sleep(2);
        await serverA.kill();
        fetchedAtKill = device.stats().fetchedBlocks;
        await copy;
        t.is((await device.settledStats()).presentBlocks, 512);
        t.is(device.stats().failedFetches, 0);
      } finally {
        await device.close();
      }
      t.true(fetchedAtKill < 300, `the kill came after ${fetchedAtKill} of ~380 data blocks`);
      t.true((await readFile(join(dir, 'copy.raw'))).equals(image.content), 'the read through the device is byte-identical');
      t.true((await readFile(join(dir, 'disk.raw'))).equals(image.content), 'the filled disk is byte-identical');
      t.true(events.some((e) => e.uri === serverA.uri && !e.final), 'A failed over to B');
      t.false(events.some((e) => e.final));

      // Stateless: an image imported into the bucket now is served by B at once, and by A once
      // restarted (on the same socket, a killed server's file left behind).
      const later = await makeImage(dir, 'later', { size: 64 * 65536, repoDir: repo });
      const fromB = join(dir, 'later-b.raw');
      await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///later?socket=${serverB.socket}`, fromB]);
      t.true((await readFile(fromB)).equals(later.content), 'B serves an image imported after it started');
      serverA = await serveRepositoryCli(repo, socketA);
      for (const name of ['demo@1', 'later']) {
        const out = join(dir, `${name}-a.raw`);
        await execa('nbdcopy', [`nbd+unix:///${name}?socket=${socketA}`, out]);
        t.true((await readFile(out)).equals(name === 'later' ? later.content : image.content), `restarted A serves ${name}`);
      }
    } finally {
      await serverA.kill();
      await serverB.kill();
    }
  }));
