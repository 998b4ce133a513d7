// Commands in a stock guest (debian-plain: no lazyboot hooks, only qemu-guest-agent) through
// launch()'s run(), copyIn() and copyOut(), on one boot: live output over the stream ports (10 MiB
// with a checksum, stderr apart, the first line before the command ends), stdin, exit codes,
// a command that is not found or not executable, a timeout that kills the command's process tree
// in the guest, and a 20 MiB copy in and out.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import test from 'ava';
import { ensureFixture } from '../fixtures/build.js';
import { launch, type LazyVm } from '../lib/launch.js';
import { CommandNotStarted } from '../vmm/errors.js';
import { importImage, leftovers, qemuProcessesMentioning, scratchDir } from './boot-support.js';

/** A sink that keeps what it gets and calls `onText` with all text so far after each write. */
function collector(onText: (text: string) => void = () => {}) {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk);
      onText(Buffer.concat(chunks).toString('latin1'));
      done();
    },
  });
  return { sink, bytes: () => Buffer.concat(chunks) };
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function guestSha256(vm: LazyVm, file: string): Promise<string> {
  const result = await vm.exec('sha256sum', [file]);
  return result.stdout.split(' ')[0]!;
}

test.serial('debian-plain: live output, stdin, exit codes, not found, timeout kill, 20 MiB copy in and out — one boot', async (t) => {
  t.timeout(15 * 60_000);
  const plain = await ensureFixture('debian-plain');
  const scratch = await scratchDir(t);
  const repoDir = await importImage(scratch, plain.path, 'plain');
  process.env.TMPDIR = path.join(scratch, 'tmp');
  await import('node:fs/promises').then((fs) => fs.mkdir(process.env.TMPDIR!, { recursive: true }));
  const vm = await launch({ image: 'plain', from: [repoDir], agent: true, memoryMiB: 512, timeoutMs: 400_000 });
  try {
    await vm.ready;

    // Exit codes pass through.
    for (const code of [0, 3, 255]) {
      const out = collector();
      const err = collector();
      const outcome = await vm.run(['sh', '-c', `echo code ${code}; exit ${code}`], { stdout: out.sink, stderr: err.sink });
      t.deepEqual(outcome, { kind: 'exited', exitCode: code, outputComplete: true });
      t.is(out.bytes().toString(), `code ${code}\n`);
    }

    // Not found / not executable: refused before anything runs, with the reason.
    const notFound = await t.throwsAsync(vm.run(['no-such-command-xyz'], { stdout: collector().sink, stderr: collector().sink }), { instanceOf: CommandNotStarted });
    t.is(notFound!.reason, 'not-found');
    t.regex(notFound!.message, /no-such-command-xyz: not found in the guest/);
    t.is((await vm.exec('sh', ['-c', 'echo data > /tmp/plain.txt && chmod 644 /tmp/plain.txt'])).exitCode, 0);
    const notExecutable = await t.throwsAsync(vm.run(['/tmp/plain.txt'], { stdout: collector().sink, stderr: collector().sink }), { instanceOf: CommandNotStarted });
    t.is(notExecutable!.reason, 'not-executable');

    // 10 MiB on stdout with stderr lines between its pieces; the command first prints a line and
    // waits for a file that this test creates only once it has seen that line on the host.
    const prepared = await vm.exec('sh', ['-c', 'head -c 10485760 /dev/urandom > /tmp/data && sync']);
    t.is(prepared.exitCode, 0);
    const expected = await guestSha256(vm, '/tmp/data');
    let sawFirstLine: () => void;
    const firstLine = new Promise<void>((resolve) => (sawFirstLine = resolve));
    const out = collector((text) => text.startsWith('first\n') && sawFirstLine());
    const err = collector();
    const script = [
      'echo first',
      'while [ ! -e /tmp/go ]; do sleep 0.2; done',
      'for i in 0 1 2 3 4 5 6 7 8 9; do dd if=/tmp/data bs=1048576 skip=$i count=1 2>/dev/null; echo "stderr line $i" >&2; done',
    ].join('\n');
    const started = Date.now();
    const running = vm.run(['sh', '-c', script], { stdout: out.sink, stderr: err.sink });
    await firstLine;
    t.log(`first line on the host after ${Date.now() - started} ms, while the command waits`);
    t.is((await vm.exec('touch', ['/tmp/go'])).exitCode, 0);
    t.deepEqual(await running, { kind: 'exited', exitCode: 0, outputComplete: true });
    t.log(`10 MiB streamed in ${Date.now() - started} ms`);
    const stdout = out.bytes();
    t.is(stdout.subarray(0, 6).toString(), 'first\n');
    t.is(stdout.length, 6 + 10 * 1024 * 1024);
    t.is(sha256(stdout.subarray(6)), expected, 'every byte of stdout arrived, in order');
    t.is(err.bytes().toString(), Array.from({ length: 10 }, (_, i) => `stderr line ${i}\n`).join(''), 'stderr apart, in order');

    // Stdin: 1 MiB in, its checksum out.
    const input = randomBytes(1024 * 1024);
    const echoed = collector();
    const fed = await vm.run(['sh', '-c', 'sha256sum | cut -d" " -f1'], { stdout: echoed.sink, stderr: collector().sink, stdin: Readable.from([input]) });
    t.is(fed.kind, 'exited');
    t.is(echoed.bytes().toString().trim(), sha256(input));

    // A timeout kills the command and its children in the guest.
    const timedOut = await vm.run(['sh', '-c', 'sleep 1001 & sleep 1002; echo never'], { stdout: collector().sink, stderr: collector().sink, timeoutMs: 3000 });
    t.deepEqual(timedOut, { kind: 'timed-out', timeoutMs: 3000 });
    const survivors = await vm.exec('sh', ['-c', 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " " | grep -c "sleep 100[12]" || true']);
    t.is(survivors.stdout.trim(), '0', 'no process of the timed-out command is left in the guest');

    // 20 MiB in and back out, checksums equal on both sides.
    const payload = randomBytes(20 * 1024 * 1024);
    const hostIn = path.join(scratch, 'payload.bin');
    await writeFile(hostIn, payload);
    const copyStarted = Date.now();
    const copiedIn = await vm.copyIn(hostIn, '/tmp/payload.bin');
    const inMs = Date.now() - copyStarted;
    t.deepEqual(copiedIn, { bytes: payload.length, sha256: sha256(payload) });
    t.is(await guestSha256(vm, '/tmp/payload.bin'), sha256(payload));
    const hostOut = path.join(scratch, 'payload.out');
    const outStarted = Date.now();
    const copiedOut = await vm.copyOut('/tmp/payload.bin', hostOut);
    t.log(`20 MiB copy in ${inMs} ms, out ${Date.now() - outStarted} ms`);
    t.is(copiedOut.sha256, sha256(payload));
    t.is(sha256(await readFile(hostOut)), sha256(payload));
    await t.throwsAsync(vm.copyOut('/tmp/no-such-file', path.join(scratch, 'x')), { message: /cannot copy guest:\/tmp\/no-such-file to .*: .*No such file/ });
  } finally {
    await vm.close();
  }
  t.deepEqual(await leftovers(process.env.TMPDIR!), []);
  t.deepEqual(await qemuProcessesMentioning(scratch), []);
});
