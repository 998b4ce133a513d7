// The guest network's QEMU arguments: user-mode NIC, forwards bound to the host's loopback only,
// `restrict` keeping forwards while cutting the guest off, `none` without a NIC; a free host port
// is picked when none is given.
import { createServer } from 'node:net';
import test from 'ava';
import { networkArgs, parseForward, resolveForwards } from '../vmm/network-args.js';

test('user and restrict modes: a virtio-net NIC, forwards on 127.0.0.1 only; none: no NIC', (t) => {
  t.deepEqual(networkArgs('user', [{ hostPort: 8080, guestPort: 80 }]), [
    '-netdev', 'user,id=lazyboot-net,hostfwd=tcp:127.0.0.1:8080-:80',
    '-device', 'virtio-net-pci,netdev=lazyboot-net,id=lazyboot-nic',
  ]);
  t.regex(networkArgs('restrict', [])[1]!, /^user,id=lazyboot-net,restrict=on$/);
  t.deepEqual(networkArgs('none', []), []);
  t.throws(() => networkArgs('none', [{ hostPort: 1, guestPort: 2 }]), { message: /--forward needs a network/ });
});

test('--forward GUEST_PORT picks a free loopback port; HOST:GUEST keeps both', async (t) => {
  t.deepEqual(parseForward('2222:22'), { hostPort: 2222, guestPort: 22 });
  const [picked] = await resolveForwards([parseForward('22')]);
  t.is(picked!.guestPort, 22);
  t.true(picked!.hostPort > 0);
  // The port is free again: a server can bind it (QEMU will).
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(picked!.hostPort, '127.0.0.1', resolve));
  await new Promise((resolve) => server.close(resolve));
  t.throws(() => parseForward('0'), { message: /is not a port/ });
  t.throws(() => parseForward('http'), { message: /is not a port/ });
});
