// What the S3 gateway of a throwaway Ceph cluster (test/helpers/ceph.ts) did between two moments,
// counted by the gateway itself: its perf counters over the admin socket (`ceph --admin-daemon
// …/client.rgw.a.asok perf dump`: rgw.req, rgw.get, rgw.get_b, rgw.put, rgw.put_b) and the CPU
// time of radosgw and ceph-osd from /proc. The admin socket is not HTTP: reading it adds nothing.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { CephCluster } from '../test/helpers/ceph.js';
import { processCpuSeconds } from './bench-kit.js';

export interface GatewayCounts {
  /** Every HTTP request the gateway handled (GET, HEAD, LIST, PUT, …). */
  readonly requests: number;
  readonly gets: number;
  /** Bytes of object data the gateway sent in GET replies. */
  readonly getBytes: number;
  readonly puts: number;
  readonly putBytes: number;
  /** CPU seconds (user + system) of radosgw and of the OSD. */
  readonly gatewayCpuS: number;
  readonly osdCpuS: number;
}

export class GatewayCounter {
  private constructor(private readonly socket: string, private readonly gatewayPid: number, private readonly osdPid: number) {}

  static async of(cluster: CephCluster): Promise<GatewayCounter> {
    const byName = new Map<string, number>();
    for (const pid of cluster.pids()) byName.set((await readFile(`/proc/${pid}/comm`, 'utf8')).trim(), pid);
    const gateway = byName.get('radosgw');
    const osd = byName.get('ceph-osd');
    if (gateway === undefined || osd === undefined) throw new Error(`the cluster runs no radosgw or ceph-osd (pids ${cluster.pids().join(' ')})`);
    return new GatewayCounter(join(cluster.dir, 'run', 'client.rgw.a.asok'), gateway, osd);
  }

  async sample(): Promise<GatewayCounts> {
    const { stdout } = await execa('ceph', ['--admin-daemon', this.socket, 'perf', 'dump', 'rgw']);
    const rgw = (JSON.parse(stdout) as { rgw: Record<string, number> }).rgw;
    return {
      requests: rgw.req!, gets: rgw.get!, getBytes: rgw.get_b!, puts: rgw.put!, putBytes: rgw.put_b!,
      gatewayCpuS: await processCpuSeconds(this.gatewayPid), osdCpuS: await processCpuSeconds(this.osdPid),
    };
  }

  /** Runs `body` and returns its result with what the gateway did meanwhile. */
  async around<T>(body: () => Promise<T>): Promise<{ result: T; counts: GatewayCounts }> {
    const before = await this.sample();
    const result = await body();
    return { result, counts: difference(await this.sample(), before) };
  }
}

export function difference(after: GatewayCounts, before: GatewayCounts): GatewayCounts {
  return {
    requests: after.requests - before.requests, gets: after.gets - before.gets, getBytes: after.getBytes - before.getBytes,
    puts: after.puts - before.puts, putBytes: after.putBytes - before.putBytes,
    gatewayCpuS: after.gatewayCpuS - before.gatewayCpuS, osdCpuS: after.osdCpuS - before.osdCpuS,
  };
}

export const NO_COUNTS: GatewayCounts = { requests: 0, gets: 0, getBytes: 0, puts: 0, putBytes: 0, gatewayCpuS: 0, osdCpuS: 0 };
