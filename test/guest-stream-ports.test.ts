// The host side of a stream port without a guest: an OutputPort over a real socket pair passes
// bytes on as they come, stops at the end token even when it is split across chunks, and holds
// back only what could be the token's start.
import { createServer, connect, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import test from 'ava';
import { OutputPort, tokenStartAtEnd } from '../guest/stream-ports.js';

async function socketPair(): Promise<[Socket, Socket, () => void]> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const client = connect((server.address() as { port: number }).port, '127.0.0.1');
  const peer = await accepted;
  return [client, peer, () => server.close()];
}

test('tokenStartAtEnd holds only a tail that begins the token', (t) => {
  const token = Buffer.from('lazyboot-end-abc');
  t.is(tokenStartAtEnd(Buffer.from('first\n'), token), 0);
  t.is(tokenStartAtEnd(Buffer.from('data lazy'), token), 4);
  t.is(tokenStartAtEnd(Buffer.from('l'), token), 1);
  t.is(tokenStartAtEnd(Buffer.from('lazyboot-end-ab'), token), 15);
});

test('an output port forwards live and stops at a token split across chunks', async (t) => {
  const [hostSide, guestSide, stop] = await socketPair();
  t.teardown(() => {
    hostSide.destroy();
    guestSide.destroy();
    stop();
  });
  const port = new OutputPort(hostSide, 'stdout');
  const received: string[] = [];
  let sawFirst: () => void;
  const first = new Promise<void>((resolve) => (sawFirst = resolve));
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      received.push(chunk.toString());
      if (received.join('') === 'first\n') sawFirst();
      done();
    },
  });
  const token = Buffer.from('lazyboot-end-0123456789');
  const forwarding = port.forward(token, sink);
  guestSide.write('first\n');
  await first; // a short line is not held back waiting for more
  guestSide.write('more lazyboot-end-01');
  await new Promise((resolve) => setTimeout(resolve, 50));
  guestSide.write('23456789');
  await forwarding.done;
  t.is(received.join(''), 'first\nmore ');
});
