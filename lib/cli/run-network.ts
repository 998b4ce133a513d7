// `lazyboot run --net user|restrict|none --forward [HOST:]GUEST`: the QEMU arguments (chosen
// before the boot, host ports picked when not given) and, once the agent answers, the guest's
// interface brought up through the agent if the guest did not configure it itself.
import type { LazyVm } from '../launch.js';
import { NETWORK_SETUP } from '../../guest/network-script.js';
import { networkArgs, parseForward, resolveForwards, USER_NET, type NetworkMode, type PortForward } from '../../vmm/network-args.js';

export interface RunNetwork {
  readonly mode: NetworkMode;
  readonly forwards: readonly PortForward[];
  readonly qemuArgs: readonly string[];
}

export async function prepareNetwork(mode: NetworkMode, forwardSpecs: readonly string[]): Promise<RunNetwork> {
  const forwards = await resolveForwards(forwardSpecs.map(parseForward));
  return { mode, forwards, qemuArgs: networkArgs(mode, forwards) };
}

/**
 * Configures the guest's NIC through the agent when it has no IPv4 address (images without a
 * DHCP client). Returns what happened, for a milestone line; never throws for a guest it cannot
 * configure (the command may not need the network): the line says so.
 */
export async function configureGuestNetwork(vm: LazyVm, network: RunNetwork): Promise<string> {
  if (network.mode === 'none') return 'none';
  const result = await vm.exec('/bin/sh', ['-c', NETWORK_SETUP, 'lazyboot-net', `${USER_NET.guestAddress}/${USER_NET.prefix}`, USER_NET.gateway, USER_NET.dns]);
  const said = result.stdout.trim().split('\n').pop() ?? '';
  if (result.exitCode === 0) return said.startsWith('configured') ? `${said} as ${USER_NET.guestAddress}/${USER_NET.prefix} through the agent` : 'configured by the guest itself';
  return `warning: could not configure the guest's network (${said || result.stderr.trim() || `exit ${result.exitCode}`}); forwards may not reach the guest`;
}
