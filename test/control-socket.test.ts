// A running VM driven from outside through its control socket (lib/control/): `lazyboot boot
// --name` claims a name and a 0600 socket, `lazyboot ps` lists it, `lazyboot pivot NAME` pivots a VM
// booted with --pivot none, `lazyboot stop NAME` tears it down in order and leaves nothing behind;
// a name in use, an unknown name and a stale socket of a killed VM are each handled in one line.
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, stat } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'ava';
import { execa, type ResultPromise } from 'execa';
import { ensureFixture } from '../fixtures/build.js';
import { STAY_UP_FW_CFG_NAME } from '../guest/qemu-args.js';
import { ControlCommands } from '../lib/control/commands.js';
import { callVm, runningVmNames } from '../lib/control/client.js';
import { ControlServer } from '../lib/control/server.js';
import { controlDir, ensureControlDir, ControlDirUnsafe } from '../lib/control/runtime-dir.js';
import type { VmStatusReport } from '../lib/control/vm-commands.js';
import { CLI, importImage, leftovers, processAlive, qemuProcessesMentioning, scratchDir, serveRepository } from './boot-support.js';

const BOOT_TIMEOUT_MS = 300_000;
const stayUp = ['--qemu-arg=-fw_cfg', `--qemu-arg=name=${STAY_UP_FW_CFG_NAME},string=1`];

/** Everything a child wrote on stderr so far, and a wait for a pattern in it (earlier output included). */
function watchStderr(child: ResultPromise) {
  let seen = '';
  const waiters = new Set<() => void>();
  child.stderr!.on('data', (chunk: Buffer) => {
    seen += chunk.toString();
    for (const waiter of [...waiters]) waiter();
  });
  return {
    get text() {
      return seen;
    },
    waitFor(pattern: RegExp): Promise<RegExpExecArray> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(seen);
          if (match) {
            waiters.delete(check);
            resolve(match);
          }
        };
        waiters.add(check);
        check();
        void child.then(() => {
          if (waiters.has(check)) reject(new Error(`the process ended before ${pattern}:\n${seen}`));
        });
      });
    },
  };
}

async function controlEnv(t: import('ava').ExecutionContext) {
  const scratch = await scratchDir(t);
  const tmp = path.join(scratch, 'tmp');
  const runtime = path.join(scratch, 'run');
  await mkdir(tmp);
  await mkdir(runtime, { mode: 0o700 });
  // Private to this test: `ps` sees this test's VMs only.
  const env = { TMPDIR: tmp, XDG_RUNTIME_DIR: runtime };
  const cli = (args: string[]) => execa('node', [CLI, ...args], { env, reject: false });
  return { scratch, tmp, runtime, env, cli, vmsDir: path.join(runtime, 'lazyboot', 'vms') };
}

test.serial('tiny booted with --name and --pivot none: ps lists it, a second VM of that name is refused, pivot NAME moves it to native, stop NAME leaves nothing behind', async (t) => {
  t.timeout(3 * BOOT_TIMEOUT_MS);
  const tiny = await ensureFixture('tiny');
  const { scratch, tmp, env, cli, vmsDir } = await controlEnv(t);
  const served = await serveRepository(t, await importImage(scratch, tiny.path, 'tiny'));
  const boot = execa('node', [CLI, 'boot', 'tiny', '--name', 'ctl-a', '--pivot', 'none', '--from', served.uri, '--memory', '256M', '--timeout', '300s', ...stayUp], { env, reject: false });
  t.teardown(() => void boot.kill('SIGKILL'));
  const stderr = watchStderr(boot);
  const socketPath = (await stderr.waitFor(/VM ctl-a: control socket (\S+)/))[1]!;
  t.is(socketPath, path.join(vmsDir, 'ctl-a.sock'));
  t.is((await stat(socketPath)).mode & 0o777, 0o600, 'the socket is the owner\'s alone');
  t.is((await stat(vmsDir)).mode & 0o777, 0o700);
  const qemuPid = Number((await stderr.waitFor(/QEMU up \(pid (\d+)\)/))[1]);

  // The same name again: refused in one line before anything boots.
  const twin = await cli(['boot', 'tiny', '--name', 'ctl-a', '--from', served.uri, '--memory', '256M']);
  t.log(twin.stderr);
  t.is(twin.exitCode, 1);
  t.is(twin.stderr.trim().split('\n').length, 1, 'one line');
  t.regex(twin.stderr, /^lazyboot: a running VM is already named ctl-a: choose another --name/);
  t.notRegex(twin.stderr, /QEMU up/);

  await stderr.waitFor(/storage-ready at/);
  const listed = await cli(['ps']);
  t.log(listed.stdout);
  t.is(listed.exitCode, 0);
  t.regex(listed.stdout, /^NAME\s+STATE\s+STORAGE-READY\s+PIVOT\s+FILL\s+FETCHED/);
  t.regex(listed.stdout, /\nctl-a\s+(storage-ready|running)\s+hook\s+none\s+-\s+[\d.]+ [KMG]?i?B/);
  const before = JSON.parse((await cli(['ps', '--json'])).stdout) as VmStatusReport[];
  t.is(before.length, 1);
  t.like(before[0], { name: 'ctl-a', image: 'tiny@1', storageReady: 'hook', pivot: 'none', fill: 'none', pid: boot.pid });
  t.true(before[0]!.fetchedBytes! > 0);

  // The pivot from outside, with a slow fill so that ps can see it run.
  const pivoted = await cli(['pivot', 'ctl-a', '--fill-rate', '1M']);
  t.log(pivoted.stdout, pivoted.stderr);
  t.is(pivoted.exitCode, 0);
  t.regex(pivoted.stdout, /^ctl-a: pivoted to native; the guest was paused [\d.]+ ms; \d+ blocks were local; the fill runs/);
  await stderr.waitFor(/pivot to native at [\d.]+ s: the guest was paused/);
  let after: VmStatusReport | undefined;
  for (let tries = 0; tries < 60; tries++) {
    after = (JSON.parse((await cli(['ps', '--json'])).stdout) as VmStatusReport[])[0];
    if (after?.fillLen) break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  t.log(JSON.stringify(after));
  t.like(after, { name: 'ctl-a', pivot: 'native' });
  t.true(['running', 'paused', 'complete'].includes(after!.fill!), `fill ${after!.fill}`);
  t.true(after!.fillLen! > 0);
  const again = await cli(['pivot', 'ctl-a']);
  t.is(again.exitCode, 0, 'a second pivot answers with the first one'); // idempotent: the VM is native

  // Stop: answered once the teardown is done; the boot process ends with its summary, exit 0.
  const stopped = await cli(['stop', 'ctl-a']);
  t.log(stopped.stdout, stopped.stderr);
  t.is(stopped.exitCode, 0);
  t.is(stopped.stdout.trim(), 'ctl-a: stopped');
  const result = await boot;
  t.log(result.stdout);
  t.is(result.exitCode, 0);
  t.regex(result.stdout, /summary: tiny@1 stopped/);
  t.regex(result.stdout, /pivot: live at [\d.]+ s, guest paused [\d.]+ ms/);
  t.false(processAlive(qemuPid));
  t.false(existsSync(socketPath), 'the socket is removed');
  t.false(existsSync(vmsDir), 'and its directory, now empty');
  t.deepEqual(await leftovers(tmp), []);
  t.deepEqual(await qemuProcessesMentioning(tmp), []);
  t.is((await cli(['ps'])).stdout, 'no running VMs');
  const gone = await cli(['stop', 'ctl-a']);
  t.is(gone.exitCode, 1);
  t.regex(gone.stderr, /^lazyboot: no running VM is named ctl-a \(no control socket in .*\): see `lazyboot ps`/);
  t.is(gone.stderr.trim().split('\n').length, 1);
});

test('an unknown VM name or a bad one: one line, exit 1, for stop, pivot and nothing created', async (t) => {
  const { cli, vmsDir } = await controlEnv(t);
  for (const args of [['stop', 'nosuch'], ['pivot', 'nosuch']]) {
    const result = await cli(args);
    t.is(result.exitCode, 1, args.join(' '));
    t.regex(result.stderr, /^lazyboot: no running VM is named nosuch .*see `lazyboot ps`/);
    t.is(result.stderr.trim().split('\n').length, 1);
  }
  const bad = await cli(['stop', '../etc/x']);
  t.is(bad.exitCode, 1);
  t.regex(bad.stderr, /^lazyboot: bad VM name "..\/etc\/x": use letters, digits/);
  t.false(existsSync(vmsDir));
  t.is((await cli(['ps'])).stdout, 'no running VMs');
});

test('the socket of a VM whose process was killed is recognised as stale: ps drops it, and its name can be taken again', async (t) => {
  const { scratch } = await controlEnv(t);
  const dir = path.join(scratch, 'vms');
  await ensureControlDir(dir);
  // A VM process killed with SIGKILL leaves its socket file and nobody listening on it.
  const holder = execa('node', ['-e', `require('net').createServer().listen(${JSON.stringify(path.join(dir, 'ghost.sock'))}, () => console.log('up'))`], { reject: false });
  await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
  t.deepEqual(await runningVmNames(dir), ['ghost'], 'alive while its process lives');
  holder.kill('SIGKILL');
  await holder;
  t.true(existsSync(path.join(dir, 'ghost.sock')), 'the killed process left its socket');
  t.deepEqual(await runningVmNames(dir), [], 'stale: not listed');
  t.false(existsSync(path.join(dir, 'ghost.sock')), 'and removed');
  // A live server holds its name against a second one, and gives it up at close.
  const first = await ControlServer.listen('ghost', new ControlCommands(), { dir });
  const second = await ControlServer.listen('ghost', new ControlCommands(), { dir }).catch((error: Error) => error);
  t.regex(String((second as Error).message), /a running VM is already named ghost/);
  await first.close();
  t.false(existsSync(dir), 'the empty control dir is removed at close');
});

test('the protocol: JSON lines, replies by id, unknown commands and bad lines answered with an error, extra commands through the registry', async (t) => {
  const { scratch } = await controlEnv(t);
  const dir = path.join(scratch, 'vms');
  const commands = new ControlCommands().add('echo', 'returns its args', (args) => args);
  const server = await ControlServer.listen('proto', commands, { dir });
  t.teardown(() => server.close());
  t.deepEqual(await callVm('proto', 'echo', { a: 1 }, { dir }), { a: 1 });
  t.deepEqual(((await callVm('proto', 'help', {}, { dir })) as Array<{ name: string }>).map((command) => command.name), ['help', 'echo']);
  const unknown = await callVm('proto', 'snapshot', {}, { dir }).catch((error: Error) => error);
  t.regex((unknown as Error).message, /^proto: unknown control command "snapshot"/);
  // Raw lines, as socat would send them: two requests in one write, then a broken line.
  const replies = await new Promise<string[]>((resolve) => {
    const socket = net.connect(server.socketPath);
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString();
      const lines = text.trim().split('\n');
      if (lines.length >= 3) {
        socket.destroy();
        resolve(lines);
      }
    });
    socket.write('{"id":7,"command":"echo","args":{"x":true}}\n{"id":"b","command":"help"}\nnot json\n');
  });
  const parsed = replies.map((line) => JSON.parse(line) as { id: unknown; ok: boolean });
  t.deepEqual(parsed.find((reply) => reply.id === 7), { id: 7, ok: true, result: { x: true } });
  t.true(parsed.find((reply) => reply.id === 'b')!.ok);
  t.like(parsed.find((reply) => reply.id === null), { ok: false, error: { name: 'BadRequest' } });
});

test('without XDG_RUNTIME_DIR the sockets go to a private dir under TMPDIR; a control dir others can enter is refused', async (t) => {
  const { scratch } = await controlEnv(t);
  const fallback = controlDir({});
  t.is(path.dirname(fallback), tmpdir());
  t.regex(path.basename(fallback), /^lazyboot-vms-\d+$/);
  t.is(controlDir({ XDG_RUNTIME_DIR: '/run/user/1000' }), '/run/user/1000/lazyboot/vms');
  const open = path.join(scratch, 'open');
  await mkdir(open);
  await chmod(open, 0o777);
  const refused = await ensureControlDir(open).catch((error: Error) => error);
  t.true(refused instanceof ControlDirUnsafe);
  t.regex((refused as Error).message, /is unsafe: its mode is 777, not 700/);
  t.deepEqual(await readdir(open), []);
});
