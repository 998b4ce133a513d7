// QEMU arguments for the guest channels: one virtio-serial controller carrying the
// qemu-guest-agent port, the lazyboot events port and the command stream ports, each on a unix socket QEMU serves
// (server=on,wait=off: QEMU does not wait for us, we connect when we like).
import { escapeOption } from '../lib/base/qemu-option.js';

export const AGENT_PORT_NAME = 'org.qemu.guest_agent.0';
export const EVENTS_PORT_NAME = 'org.lazyboot.events.0';
/**
 * Ports a command's standard streams travel on (one per stream: a virtio-serial port has one
 * opener at a time, and two streams on one port could not be told apart). The guest kernel names
 * them under /sys/class/virtio-ports/ (and udev under /dev/virtio-ports/).
 */
export const STDOUT_PORT_NAME = 'org.lazyboot.stdout.0';
export const STDERR_PORT_NAME = 'org.lazyboot.stderr.0';
export const STDIN_PORT_NAME = 'org.lazyboot.stdin.0';
/** fw_cfg entry the tiny image reads: "1" keeps it running after boot-complete. */
export const STAY_UP_FW_CFG_NAME = 'opt/org.lazyboot/stay-up';

const SERIAL_BUS_ID = 'lazyboot-vserial';

export interface GuestChannelOptions {
  readonly agentSocket?: string;
  readonly eventsSocket?: string;
  /** Sockets for a command's stdout, stderr and stdin ports (all three or none). */
  readonly streamSockets?: StreamSockets;
}

export interface StreamSockets {
  readonly stdout: string;
  readonly stderr: string;
  readonly stdin: string;
}

export function guestChannelArgs(options: GuestChannelOptions): string[] {
  const args = ['-device', `virtio-serial-pci,id=${SERIAL_BUS_ID}`];
  const port = (id: string, socketPath: string, name: string) => [
    '-chardev', `socket,id=${id},path=${escapeOption(socketPath)},server=on,wait=off`,
    '-device', `virtserialport,bus=${SERIAL_BUS_ID}.0,chardev=${id},name=${name}`,
  ];
  if (options.agentSocket) args.push(...port('lazyboot-agent', options.agentSocket, AGENT_PORT_NAME));
  if (options.eventsSocket) args.push(...port('lazyboot-events', options.eventsSocket, EVENTS_PORT_NAME));
  const streams = options.streamSockets;
  if (streams) {
    args.push(...port('lazyboot-stdout', streams.stdout, STDOUT_PORT_NAME));
    args.push(...port('lazyboot-stderr', streams.stderr, STDERR_PORT_NAME));
    args.push(...port('lazyboot-stdin', streams.stdin, STDIN_PORT_NAME));
  }
  return args;
}

/** Arguments that keep the tiny image running after boot-complete instead of powering off. */
export function tinyStayUpArgs(): string[] {
  return ['-fw_cfg', `name=${STAY_UP_FW_CFG_NAME},string=1`];
}
