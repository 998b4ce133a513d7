// The one place the VMM gets the guest channels' QEMU arguments (qemu-guest-agent port and the
// lazyboot events port): the guest side owns them in guest/qemu-args.ts.
export { AGENT_PORT_NAME, EVENTS_PORT_NAME, guestChannelArgs, tinyStayUpArgs } from '../guest/qemu-args.js';
export type { GuestChannelOptions, StreamSockets } from '../guest/qemu-args.js';
