// The one place the VMM gets the guest channels' QEMU arguments (qemu-guest-agent port and the
// lazyboot events port, both virtio-serial, both unix sockets where QEMU is the server).
// Stand-in until guest/qemu-args.ts (guest side owner) lands; then this re-exports it.
import { escapeOption } from './qemu-option.js';

export const AGENT_PORT_NAME = 'org.qemu.guest_agent.0';
export const EVENTS_PORT_NAME = 'org.lazyboot.events.0';

export function guestChannelArgs(sockets: { readonly agentSocket: string; readonly eventsSocket: string }): string[] {
  return [
    '-device', 'virtio-serial-pci,id=lazyboot-serial-bus',
    '-chardev', `socket,id=lazyboot-agent,path=${escapeOption(sockets.agentSocket)},server=on,wait=off`,
    '-device', `virtserialport,bus=lazyboot-serial-bus.0,chardev=lazyboot-agent,name=${AGENT_PORT_NAME}`,
    '-chardev', `socket,id=lazyboot-events,path=${escapeOption(sockets.eventsSocket)},server=on,wait=off`,
    '-device', `virtserialport,bus=lazyboot-serial-bus.0,chardev=lazyboot-events,name=${EVENTS_PORT_NAME}`,
  ];
}
