// The NBD server against real clients (qemu-img, qemu-io, nbdinfo, nbdcopy) serving a repository.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { withDir } from 'tmp-promise';
import { execa } from 'execa';
import { readFile, stat, access } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../lib/repo/repository.js';
import { repositoryExports } from '../lib/repo/export-provider.js';
import { startNbdServer, type ConnectionEvent, type NbdServer } from '../lib/nbd/server.js';
import { NbdListenFailed } from '../lib/nbd/errors.js';
import { exportUri, importFile, sampleDisk, serveRepository, writeDisk, MiB, PATTERN_BYTE, PATTERN_LENGTH, PATTERN_OFFSET } from './helpers/repo-fixtures.js';

interface Served {
  dir: string;
  repo: Repository;
  server: NbdServer;
  socket: string;
  disk: Buffer;
  file: string;
  /** The server's connection events. */
  events: ConnectionEvent[];
}

/** A repository holding `alpha` (2 versions: the sample disk, then a changed copy), served on a unix socket. */
function withServedRepo(body: (s: Served) => Promise<void>, disk = sampleDisk()) {
  return withDir(async ({ path: dir }) => {
    const repo = await Repository.open(join(dir, 'repo'));
    const file = await writeDisk(join(dir, 'alpha.raw'), disk);
    await importFile(repo, file, 'alpha');
    const changed = Buffer.from(disk);
    changed.fill(0x11, 0, 4096);
    await importFile(repo, await writeDisk(join(dir, 'alpha2.raw'), changed), 'alpha');
    const socket = join(dir, 'nbd.sock');
    const events: ConnectionEvent[] = [];
    const server = await serveRepository(repo, socket, { onConnectionEvent: (event) => events.push(event) });
    try {
      await body({ dir, repo, server, socket, disk, file, events });
    } finally {
      await server.close();
      await repo.close();
    }
  }, { unsafeCleanup: true });
}

test('qemu-img convert of an export is byte-identical (cmp) to the imported file', (t) =>
  withServedRepo(async ({ dir, socket, file, disk }) => {
    t.not(disk.length % (64 * 1024), 0, 'size is not a multiple of the block size');
    const out = join(dir, 'out.raw');
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', exportUri(socket, 'alpha@1'), out]);
    const { exitCode } = await execa('cmp', [file, out], { reject: false });
    t.is(exitCode, 0);
  }));

test('qemu-img rounds an odd-sized export up to 512 bytes; nbdcopy copies it exactly', (t) =>
  withServedRepo(async ({ dir, socket, file, disk }) => {
    t.not(disk.length % 512, 0);
    const viaQemu = join(dir, 'qemu.raw');
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', exportUri(socket, 'alpha@1'), viaQemu]);
    const qemuCopy = await readFile(viaQemu);
    t.is(qemuCopy.length, Math.ceil(disk.length / 512) * 512);
    t.true(qemuCopy.subarray(0, disk.length).equals(disk));
    t.true(qemuCopy.subarray(disk.length).equals(Buffer.alloc(qemuCopy.length - disk.length)));
    const viaNbdcopy = join(dir, 'nbdcopy.raw');
    await execa('nbdcopy', [exportUri(socket, 'alpha@1'), viaNbdcopy]);
    t.is((await execa('cmp', [file, viaNbdcopy], { reject: false })).exitCode, 0);
  }, sampleDisk(3 * MiB + 777)));

test('nbdcopy copies an export identically, and `name` serves the latest version', (t) =>
  withServedRepo(async ({ dir, socket, disk }) => {
    const out = join(dir, 'latest.raw');
    await execa('nbdcopy', [exportUri(socket, 'alpha'), out]);
    const copy = await readFile(out);
    t.true(copy.subarray(0, 4096).equals(Buffer.alloc(4096, 0x11)), 'version 2 content');
    t.true(copy.subarray(4096).equals(disk.subarray(4096)));
  }));

test('nbdinfo --list lists every version and the latest name, not the manifest exports', (t) =>
  withServedRepo(async ({ socket }) => {
    const { stdout } = await execa('nbdinfo', ['--list', `nbd+unix:///?socket=${socket}`]);
    const names = [...stdout.matchAll(/^export="([^"]*)":/gm)].map((m) => m[1]);
    t.deepEqual(names.sort(), ['alpha', 'alpha@1', 'alpha@2']);
    t.regex(stdout, /is_read_only: true/);
  }));

test('nbdinfo --map shows the zero region as a hole', (t) =>
  withServedRepo(async ({ socket, disk }) => {
    const { stdout } = await execa('nbdinfo', ['--map', exportUri(socket, 'alpha@1')]);
    const extents = stdout.trim().split('\n').map((line) => {
      const [offset, length, type] = line.trim().split(/\s+/);
      return [Number(offset), Number(length), Number(type)];
    });
    t.deepEqual(extents, [
      [0, MiB, 0],
      [MiB, MiB, 3], // hole,zero
      [2 * MiB, disk.length - 2 * MiB, 0],
    ]);
  }));

/** 8 MiB of data with a 64 KiB zero block in every four, then 2 MiB of zeros, then 1 MiB of data. */
function fragmentedDisk(): Buffer {
  const disk = randomBytes(11 * MiB);
  for (let block = 1; block < 128; block += 4) disk.fill(0, block * 64 * 1024, (block + 1) * 64 * 1024);
  disk.fill(0, 8 * MiB, 10 * MiB);
  return disk;
}

test('qemu-img convert (one extent per block status request) asks a few times, not once per short zero run; long holes stay holes', (t) =>
  withServedRepo(async ({ dir, socket, file }) => {
    const out = join(dir, 'out.raw');
    // QEMU's NBD client sets NBD_CMD_FLAG_REQ_ONE: without coalescing this image costs it a status
    // round trip per zero block and per data run (~64), and reads of 192 KiB.
    const { stderr } = await execa('qemu-img', ['--trace', 'nbd_send_request', 'convert', '-f', 'raw', '-O', 'raw', exportUri(socket, 'alpha@1'), out]);
    const statusRequests = (stderr.match(/\(block status\)/g) ?? []).length;
    t.true(statusRequests > 0 && statusRequests <= 6, `${statusRequests} block status requests`);
    t.is((await execa('cmp', [file, out], { reject: false })).exitCode, 0, 'byte-identical');
    const map = JSON.parse((await execa('qemu-img', ['map', '--output=json', '-f', 'raw', exportUri(socket, 'alpha@1')])).stdout) as Array<{ start: number; length: number; zero: boolean }>;
    const zeros = map.filter((entry) => entry.zero).map((entry) => [entry.start, entry.length]);
    t.deepEqual(zeros, [[8 * MiB, 2 * MiB]], 'the 2 MiB zero run is reported as one; the 64 KiB ones inside the data are not');
    // A list client still sees every zero block.
    const listed = (await execa('nbdinfo', ['--map', exportUri(socket, 'alpha@1')])).stdout.trim().split('\n').filter((line) => /\s3\s/.test(line));
    t.is(listed.length, 32 + 1);
  }, fragmentedDisk()));

test('qemu-io -r reads a known pattern (and notices a wrong one)', (t) =>
  withServedRepo(async ({ socket }) => {
    const uri = exportUri(socket, 'alpha@1');
    const good = await execa('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0x${PATTERN_BYTE.toString(16)} ${PATTERN_OFFSET} ${PATTERN_LENGTH}`, uri]);
    t.regex(good.stdout, new RegExp(`read ${PATTERN_LENGTH}/${PATTERN_LENGTH} bytes`));
    t.notRegex(good.stdout, /Pattern verification failed/);
    const zeros = await execa('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0 ${MiB} ${MiB}`, uri]);
    t.notRegex(zeros.stdout, /Pattern verification failed/);
    const wrong = await execa('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0x5a ${PATTERN_OFFSET} 4096`, uri], { reject: false });
    t.regex(wrong.stdout + wrong.stderr, /Pattern verification failed/);
  }));

test('manifest:REF serves exactly the stored manifest bytes', (t) =>
  withServedRepo(async ({ dir, socket, repo }) => {
    for (const ref of ['alpha', 'alpha@1']) {
      const out = join(dir, `${ref}.manifest`);
      await execa('nbdcopy', [exportUri(socket, `manifest:${ref}`), out]);
      t.true((await readFile(out)).equals(await repo.manifestBytes(ref)), ref);
    }
    const missing = await execa('nbdinfo', [exportUri(socket, 'manifest:nope')], { reject: false });
    t.not(missing.exitCode, 0);
    // manifest:REF/sha256: the exact version, the manifest's SHA-256 and length, in one line.
    const line = join(dir, 'digest.line');
    await execa('nbdcopy', [exportUri(socket, 'manifest:alpha/sha256'), line]);
    const bytes = await repo.manifestBytes('alpha'); // the latest version, as the line names it
    const version = (await repo.resolve('alpha')).version;
    t.is((await readFile(line, 'latin1')), `alpha@${version} ${createHash('sha256').update(bytes).digest('hex')} ${bytes.length}\n`);
    t.not((await execa('nbdinfo', [exportUri(socket, 'manifest:nope/sha256')], { reject: false })).exitCode, 0);
  }));

test('many clients at once, each with many requests in flight, all get the right bytes', (t) =>
  withServedRepo(async ({ dir, socket, file, events }) => {
    const copies = Array.from({ length: 4 }, (_, i) => join(dir, `copy${i}.raw`));
    await Promise.all(copies.map((out, i) =>
      i % 2 === 0
        ? execa('nbdcopy', ['--connections=4', '--requests=32', '--request-size=65536', exportUri(socket, 'alpha@1'), out])
        : execa('qemu-img', ['convert', '-m', '16', '-W', '-f', 'raw', '-O', 'raw', exportUri(socket, 'alpha@1'), out])));
    for (const out of copies) t.is((await execa('cmp', [file, out], { reject: false })).exitCode, 0, out);
    // Four clients, each with at least one connection (how many nbdcopy opens is its choice):
    // each connection is told once, as opened.
    const opened = events.filter((event) => event.kind === 'opened' && event.exportName === 'alpha@1' && !event.writable && event.structuredReplies);
    t.true(opened.length >= copies.length, JSON.stringify(events));
    t.is(new Set(opened.map((event) => event.connection)).size, opened.length, 'one event per connection');
  }));

test('the unix socket is mode 0600 and removed on close; TCP listening works too', (t) =>
  withDir(async ({ path: dir }) => {
    const repo = await Repository.open(join(dir, 'repo'));
    try {
      const file = await writeDisk(join(dir, 'a.raw'), sampleDisk());
      await importFile(repo, file, 'alpha');
      const socket = join(dir, 'nbd.sock');
      const server = await serveRepository(repo, socket);
      t.is(server.uri, `nbd+unix:///?socket=${socket}`);
      t.is((await stat(socket)).mode & 0o777, 0o600);
      await server.close();
      await t.throwsAsync(access(socket));
      await using tcp = await startNbdServer({ exports: repositoryExports(repo), listen: { host: '127.0.0.1', port: 0 } });
      t.regex(tcp.uri, /^nbd:\/\/127\.0\.0\.1:\d+$/);
      const out = join(dir, 'tcp.raw');
      await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `${tcp.uri}/alpha`, out]);
      t.true((await readFile(out)).subarray(0, (await stat(file)).size).equals(await readFile(file)));
    } finally {
      await repo.close();
    }
  }, { unsafeCleanup: true }));

test('a stale socket file is replaced; a live server on the path is not', (t) =>
  withDir(async ({ path: dir }) => {
    const repo = await Repository.open(join(dir, 'repo'));
    try {
      const socket = join(dir, 'stale.sock');
      // A socket file left by a process that died without removing it.
      const holder = execa('node', ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => console.log('up'))`], { reject: false, buffer: { stdout: false } });
      await new Promise((resolve) => holder.stdout!.once('data', resolve));
      holder.kill('SIGKILL');
      await holder;
      t.true((await stat(socket)).isSocket());
      const server = await serveRepository(repo, socket);
      try {
        await t.throwsAsync(serveRepository(repo, socket), { instanceOf: NbdListenFailed, message: /already listening/ });
        const { stdout } = await execa('nbdinfo', ['--list', `nbd+unix:///?socket=${socket}`]);
        t.regex(stdout, /protocol: newstyle-fixed/);
      } finally {
        await server.close();
      }
    } finally {
      await repo.close();
    }
  }, { unsafeCleanup: true }));

test('structured reads answer the image\'s zero blocks as holes (libnbd pread_structured sees them)', (t) =>
  withServedRepo(async ({ socket, disk }) => {
    // Bytes [512 KiB, 2.5 MiB): data, then the sample's zero MiB at [1, 2) MiB, then data again.
    const script = [
      'import json, sys',
      'chunks = []',
      'def chunk(buf, offset, status, error):',
      '    chunks.append([offset, len(buf), "hole" if status == nbd.READ_HOLE else "data", buf.hex() if status == nbd.READ_DATA else ""])',
      '    return 0',
      'data = h.pread_structured(2 * 1024 * 1024, 512 * 1024, chunk)',
      'print(json.dumps({"chunks": chunks, "data": data.hex()}))',
    ].join('\n');
    // nbdsh is `python3 -m nbd` of Debian's python3-libnbd: call Debian's python (not a PATH one).
    const { stdout } = await execa('/usr/bin/python3', ['-m', 'nbd', '-u', exportUri(socket, 'alpha@1'), '-c', script]);
    const result = JSON.parse(stdout) as { chunks: Array<[number, number, string, string]>; data: string };
    const holes = result.chunks.filter(([, , kind]) => kind === 'hole').map(([offset, length]) => [offset, offset + length]);
    t.deepEqual(holes, [[1 * MiB, 2 * MiB]]);
    const covered = result.chunks.reduce((sum, [, length]) => sum + length, 0);
    t.is(covered, 2 * MiB, 'chunks cover the read exactly');
    for (const [offset, length, kind, hex] of result.chunks) {
      if (kind === 'data') t.true(Buffer.from(hex, 'hex').equals(disk.subarray(offset, offset + length)), `data chunk at ${offset}`);
    }
    t.true(Buffer.from(result.data, 'hex').equals(disk.subarray(512 * 1024, 512 * 1024 + 2 * MiB)));
  }));
