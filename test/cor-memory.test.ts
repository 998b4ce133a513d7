// Memory of `lazyboot disk serve` over a real cold read: fetched buffers are reused, not left to
// the garbage collector (a guest-like 1 x 4 reader of 256 MiB peaked at ~310 MiB when fetch-ahead
// buffers were dropped; ~110 MiB now), and the data read is the image.
import test from 'ava';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeImage } from './cor-fixtures.js';
import { CLI as BIN } from './helpers/cli-path.js';

const MIB = 1024 * 1024;
/** Generous against noise (page cache, allocator), far below the ~310 MiB of dropped buffers. */
const PEAK_BOUND = 180 * MIB;

async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

test('a guest-like cold read of 256 MiB keeps the serving process under 180 MiB and reads the image', (t) => withDir(async ({ path: dir }) => {
  const image = await makeImage(dir, 'big', { size: 256 * MIB });
  const socket = join(dir, 'disk.sock');
  const server = execa('node', [BIN, 'disk', 'serve', 'big', '--disk', join(dir, 'disk.raw'), '--from', image.repoDir, '--socket', socket],
    { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' });
  t.teardown(() => { server.kill('SIGKILL'); });
  for (let i = 0; i < 400 && !(await access(socket).then(() => true, () => false)); i++) await sleep(25);
  const uri = `nbd+unix:///disk?socket=${socket}`;
  const out = join(dir, 'out.raw');
  await execa('nbdcopy', ['--connections=1', '--requests=4', uri, out]);
  const peak = await peakRss(server.pid!);
  t.true(peak < PEAK_BOUND, `peak RSS ${(peak / MIB).toFixed(0)} MiB`);
  t.true((await readFile(out)).equals(image.content), 'the cold read returns the image');
  server.kill('SIGINT');
  const result = await server;
  t.is(result.exitCode, 0, result.stderr?.toString());
}, { unsafeCleanup: true }));
