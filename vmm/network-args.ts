// QEMU arguments for the guest's network: user-mode networking (slirp: no root, no bridge) on a
// virtio-net NIC, with host ports forwarded to guest ports on the host's loopback only. Pure.
import { createServer } from 'node:net';
import { UsageError } from '../lib/base/errors.js';

/** `user`: NAT to the host's networks and the internet; `restrict`: forwards only, the guest reaches nothing; `none`: no NIC. */
export type NetworkMode = 'user' | 'restrict' | 'none';

export interface PortForward {
  /** Host port on 127.0.0.1; 0 = pick a free one. */
  readonly hostPort: number;
  readonly guestPort: number;
}

/** The address slirp gives the guest (and lazyboot configures when the guest does not). */
export const USER_NET = { guestAddress: '10.0.2.15', prefix: 24, gateway: '10.0.2.2', dns: '10.0.2.3' } as const;

function port(text: string, spec: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < 1 || value > 65535) throw new UsageError(`--forward ${spec}: ${text} is not a port`, 'write HOST_PORT:GUEST_PORT or GUEST_PORT, ports 1-65535');
  return value;
}

/** `HOST_PORT:GUEST_PORT` or `GUEST_PORT` (a free host port is picked). */
export function parseForward(spec: string): PortForward {
  const parts = spec.split(':');
  if (parts.length === 1) return { hostPort: 0, guestPort: port(parts[0]!, spec) };
  if (parts.length === 2) return { hostPort: port(parts[0]!, spec), guestPort: port(parts[1]!, spec) };
  throw new UsageError(`--forward ${spec} is not HOST_PORT:GUEST_PORT`, 'write e.g. --forward 8080:80 or --forward 80');
}

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released for QEMU to bind). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port: chosen } = server.address() as { port: number };
      server.close(() => resolve(chosen));
    });
  });
}

/** Forwards with every host port chosen. */
export async function resolveForwards(forwards: readonly PortForward[]): Promise<PortForward[]> {
  const resolved: PortForward[] = [];
  for (const forward of forwards) resolved.push(forward.hostPort === 0 ? { ...forward, hostPort: await freeLoopbackPort() } : forward);
  return resolved;
}

export function networkArgs(mode: NetworkMode, forwards: readonly PortForward[]): string[] {
  if (mode === 'none') {
    if (forwards.length > 0) throw new UsageError('--forward needs a network', 'drop --net none, or use --net restrict for forwards only');
    return [];
  }
  const netdev = ['user', 'id=lazyboot-net', ...(mode === 'restrict' ? ['restrict=on'] : [])];
  for (const forward of forwards) {
    if (forward.hostPort === 0) throw new Error('resolve host ports first (resolveForwards)');
    netdev.push(`hostfwd=tcp:127.0.0.1:${forward.hostPort}-:${forward.guestPort}`);
  }
  return ['-netdev', netdev.join(','), '-device', 'virtio-net-pci,netdev=lazyboot-net,id=lazyboot-nic'];
}
