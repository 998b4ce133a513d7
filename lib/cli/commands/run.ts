// `lazyboot run IMAGE -- CMD ARGS...`: for CI. Boots the image lazily, waits for the guest agent,
// copies files in, runs the command with its stdout/stderr streamed live (stream ports), copies
// files out (also when the command failed), tears down, and exits with the command's exit code
// or one of lazyboot's own (run-exit-codes.ts).
import { readFile } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import { installSignalTeardown, teardownOnUncaughtException } from '../../base/cleanup.js';
import { LazybootError, UsageError } from '../../base/errors.js';
import { launch, type LazyVm } from '../../launch.js';
import { CommandNotStarted } from '../../../vmm/errors.js';
import { summaryOf } from './snapshot.js';
import { bootOptions, deviceLog, launchOptionsOf, printMilestones, type BootArgs } from '../boot-options.js';
import { parseCopyIn, parseCopyOut, type CopySpec } from '../copy-specs.js';
import { RUN_EXIT } from '../run-exit-codes.js';
import { RunEventLog } from '../run-events.js';
import { configureGuestNetwork, prepareNetwork } from '../run-network.js';
import { parsePersonalization, personalize } from '../run-personalize.js';
import type { NetworkMode } from '../../../vmm/network-args.js';
import { parseDurationMs } from '../units.js';
import { prepareSeedDisk, readUserData, waitForCloudInit, type SeedDisk } from '../run-user-data.js';
import { mountShares, parseShare, startShares, type RunShares } from '../run-share.js';
import { VM_DEFAULTS } from '../../../vmm/vm-options.js';

interface RunArgs extends BootArgs {
  '--'?: (string | number)[];
  quiet: boolean;
  interactive: boolean;
  'boot-timeout'?: string;
  'copy-in'?: string[];
  'copy-out'?: string[];
  json: boolean;
  'json-fd': number;
  net: NetworkMode;
  hostname?: string;
  'ssh-key'?: string;
  'ssh-user': string;
  forward?: string[];
  share?: string[];
  'user-data'?: string;
}

/** Lines of the serial console shown when the command times out. */
const CONSOLE_TAIL_LINES = 20;

async function consoleTail(vm: LazyVm, lines: number): Promise<string[]> {
  const text = await readFile(vm.consoleLog, 'utf8').catch(() => '');
  return text.split(/\r?\n/).filter((line) => line.trim() !== '').slice(-lines);
}

export const runCommand: CommandModule<any, RunArgs> = {
  command: 'run <image>',
  describe: 'boot an image lazily, run `-- CMD ARGS...` in the guest with live output, exit with its exit code',
  builder: (y: Argv) =>
    bootOptions(y.parserConfiguration({ 'populate--': true }))
      .option('timeout', { type: 'string', describe: 'time allowed for the command (e.g. 10m); killed in the guest after it, exit 124 (0 = no limit)', defaultDescription: 'no limit' })
      .option('boot-timeout', { type: 'string', describe: 'time allowed to boot until the guest agent answers (e.g. 5m)', defaultDescription: '300s' })
      .option('interactive', { alias: 'i', type: 'boolean', default: false, describe: "feed this process's stdin to the command" })
      .option('copy-in', { type: 'string', array: true, describe: 'copy a host file into the guest before the command (HOST:GUEST; GUEST/ keeps the name); repeatable' })
      .option('copy-out', { type: 'string', array: true, describe: 'copy a guest file to the host after the command, also when it failed (GUEST:HOST); repeatable' })
      .option('net', { choices: ['user', 'restrict', 'none'] as const, default: 'user', describe: 'guest network: user-mode NAT, restrict (only the forwards reach the guest; it reaches nothing), or none' })
      .option('forward', { type: 'string', array: true, describe: 'forward 127.0.0.1:HOST_PORT to GUEST_PORT (HOST_PORT:GUEST_PORT, or GUEST_PORT for a free host port, printed); repeatable' })
      .option('share', { type: 'string', array: true, describe: 'share a host directory with the guest over virtiofs (HOST_DIR:GUEST_DIR, :ro for read-only); repeatable' })
      .option('user-data', { type: 'string', describe: 'cloud-init user-data file, attached as a NoCloud seed disk (label cidata); waits until cloud-init is done' })
      .option('hostname', { type: 'string', describe: "set the guest's hostname (through the agent; also in the seed's meta-data with --user-data)" })
      .option('ssh-key', { type: 'string', describe: 'authorize this public key file for --ssh-user in the guest (through the agent; also in the seed\'s meta-data with --user-data)' })
      .option('ssh-user', { type: 'string', default: 'root', describe: 'the guest user --ssh-key is authorized for' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no milestones on stderr' })
      .option('json', { type: 'boolean', default: false, describe: 'events as JSON lines (milestones, fetch progress, copies, the exit, a summary) instead of milestones' })
      .option('json-fd', { type: 'number', default: 2, describe: 'file descriptor for --json (e.g. --json-fd 3 3>events.ndjson)' })
      .example('$0 run debian -- cat /etc/os-release', 'print the guest’s os-release')
      .example('$0 run debian --copy-in ./t.sh:/root/ --copy-out /root/out.xml:. --timeout 10m -- /root/t.sh', 'a CI job')
      .epilogue(`Exit codes: the command's own; ${RUN_EXIT.timedOut} timed out; ${RUN_EXIT.lazybootFailed} lazyboot failed; ${RUN_EXIT.cannotStart} command cannot be started; ${RUN_EXIT.notFound} command not found.`) as Argv<any>,
  handler: async (args) => {
    // Every failure of lazyboot itself is 125, whatever part failed (the command's codes are its own).
    process.exitCode = RUN_EXIT.lazybootFailed;
    const events = RunEventLog.open(args.json, args['json-fd']);
    const times: { bootMs?: number; commandMs?: number } = {};
    let vm: LazyVm | undefined;
    let seed: SeedDisk | undefined;
    let shares: RunShares | undefined;
    try {
      const command = (args['--'] ?? []).map(String);
      if (command.length === 0) throw new UsageError('no command to run', 'put it after --, e.g. lazyboot run debian -- uname -a');
      const timeoutMs = args.timeout === undefined ? 0 : parseDurationMs(args.timeout);
      const copyIns = (args['copy-in'] ?? []).map(parseCopyIn);
      const copyOuts = (args['copy-out'] ?? []).map(parseCopyOut);
      const settings = parsePersonalization({ hostname: args.hostname, sshKey: args['ssh-key'], sshUser: args['ssh-user'] });
      const network = await prepareNetwork(args.net, args.forward ?? []);
      const shareSpecs = (args.share ?? []).map(parseShare);
      const userData = args['user-data'] === undefined ? undefined : await readUserData(args['user-data']);
      // The CLI owns its process: Ctrl-C/SIGTERM and crashes tear the VM down (the library does not).
      installSignalTeardown();
      teardownOnUncaughtException();
      const say = args.quiet || args.json ? () => {} : (line: string) => void process.stderr.write(`lazyboot: ${line}\n`);
      const launchOptions = launchOptionsOf({ ...args, timeout: args['boot-timeout'] });
      if (userData) seed = await prepareSeedDisk(userData, settings);
      shares = await startShares(shareSpecs, launchOptions.memoryMiB ?? VM_DEFAULTS.memoryMiB);
      const extraArgs = [...network.qemuArgs, ...(seed?.qemuArgs ?? []), ...shares.qemuArgs];
      vm = await launch({ ...launchOptions, qemuArgs: [...extraArgs, ...(launchOptions.qemuArgs ?? [])], agent: true, ...deviceLog(say) });
      printMilestones(vm, say);
      events.follow(vm);
      try {
        await vm.ready;
        times.bootMs = events.elapsedMs();
        if (seed) {
          const status = await waitForCloudInit(vm, launchOptions.timeoutMs || VM_DEFAULTS.timeoutMs);
          if (status === 'done') say('cloud-init: done with the seed');
          else process.stderr.write(`lazyboot: warning: cloud-init in the guest says status: ${status} (see /var/log/cloud-init.log in the guest)\n`);
          events.emit('cloud-init', { status });
        }
        for (const line of await personalize(vm, settings)) {
          say(`personalized: ${line}`);
          events.emit('personalized', { result: line });
        }
        if (network.mode !== 'none') {
          const configured = await configureGuestNetwork(vm, network);
          say(`network (${network.mode}): ${configured}`);
          events.emit('network', { mode: network.mode, result: configured });
          for (const forward of network.forwards) {
            // Printed even with --quiet (a harness needs the port it did not choose); --json has it as an event.
            if (!args.json) process.stderr.write(`lazyboot: forwarding 127.0.0.1:${forward.hostPort} to guest port ${forward.guestPort}\n`);
            events.emit('forward', { hostAddress: '127.0.0.1', hostPort: forward.hostPort, guestPort: forward.guestPort });
          }
        }
        for (const line of await mountShares(vm, shares.shares)) {
          say(`shared ${line}`);
          events.emit('shared', { result: line });
        }
        for (const copy of copyIns) {
          const copied = await vm.copyIn(copy.host, copy.guest);
          say(`copied ${copy.host} to guest:${copy.guest} (${copied.bytes} bytes)`);
          events.emit('copied', { direction: 'in', host: copy.host, guest: copy.guest, ...copied });
        }
        const commandStarted = Date.now();
        const outcome = await runInGuest(vm, command, { timeoutMs, interactive: args.interactive, say, events });
        times.commandMs = Date.now() - commandStarted;
        const copiedAll = await copyOut(vm, copyOuts, say, events);
        // A failed copy-out fails the job, but never hides the command's own failure.
        process.exitCode = copiedAll || outcome !== 0 ? outcome : RUN_EXIT.lazybootFailed;
      } finally {
        if (args.interactive) process.stdin.destroy();
        await vm.close();
      }
      // --snapshot-on-exit: the job's result kept; its failure fails the job (never hiding the command's own).
      const shipped = await vm.snapshotted.catch((error: Error) => error);
      if (shipped instanceof Error) {
        process.stderr.write(`lazyboot: ${shipped instanceof LazybootError ? shipped.toLine() : shipped.message}\n`);
        events.emit('snapshot-failed', { message: shipped instanceof LazybootError ? shipped.toLine() : shipped.message });
        if (process.exitCode === 0) process.exitCode = RUN_EXIT.lazybootFailed;
      } else if (shipped) {
        say(`snapshot on exit: ${summaryOf(shipped)}`);
        events.emit('snapshot', { ...shipped });
      }
    } catch (error) {
      events.emit('error', { message: error instanceof LazybootError ? error.toLine() : (error as Error).message });
      throw error;
    } finally {
      await shares?.close();
      await seed?.remove();
      events.stop();
      const stats = vm?.stats();
      events.emit('summary', {
        exitCode: process.exitCode,
        image: vm?.image,
        state: vm?.state,
        ...times,
        ...(stats && vm ? { fetchedBytes: stats.fetchedBytes, imageBytes: vm.imageBytes, presentBlocks: stats.presentBlocks, totalBlocks: stats.totalBlocks, modifiedBlocks: stats.modifiedBlocks } : {}),
      });
    }
  },
};

/** Runs the command; returns the exit code to end with (its own, or 124/126/127). */
async function runInGuest(
  vm: LazyVm,
  command: string[],
  options: { timeoutMs: number; interactive: boolean; say: (line: string) => void; events: RunEventLog },
): Promise<number> {
  const { events } = options;
  events.emit('command-started', { command });
  try {
    const outcome = await vm.run(command, {
      stdout: process.stdout,
      stderr: process.stderr,
      stdin: options.interactive ? process.stdin : undefined,
      timeoutMs: options.timeoutMs,
    });
    if (outcome.kind === 'timed-out') {
      const tail = await consoleTail(vm, CONSOLE_TAIL_LINES);
      process.stderr.write(`lazyboot: the command did not end within ${outcome.timeoutMs / 1000} s: killed in the guest (exit ${RUN_EXIT.timedOut})\n`);
      if (tail.length > 0) process.stderr.write(`lazyboot: last lines of the guest console:\n${tail.map((line) => `  | ${line}\n`).join('')}`);
      events.emit('command-timed-out', { timeoutMs: outcome.timeoutMs, exitCode: RUN_EXIT.timedOut, consoleTail: tail });
      return RUN_EXIT.timedOut;
    }
    if (!outcome.outputComplete) process.stderr.write("lazyboot: warning: the end of the command's output did not arrive; some output may be missing\n");
    events.emit('command-exited', { exitCode: outcome.exitCode, outputComplete: outcome.outputComplete });
    return outcome.exitCode;
  } catch (error) {
    if (!(error instanceof CommandNotStarted)) throw error;
    process.stderr.write(`lazyboot: ${error.toLine()}\n`);
    const exitCode = error.reason === 'not-found' ? RUN_EXIT.notFound : RUN_EXIT.cannotStart;
    events.emit('command-not-started', { reason: error.reason, message: error.toLine(), exitCode });
    return exitCode;
  }
}

/** Copies every --copy-out file; a failure is reported and the others still copied. False if any failed. */
async function copyOut(vm: LazyVm, copies: readonly CopySpec[], say: (line: string) => void, events: RunEventLog): Promise<boolean> {
  let copiedAll = true;
  for (const copy of copies) {
    try {
      const copied = await vm.copyOut(copy.guest, copy.host);
      say(`copied guest:${copy.guest} to ${copy.host} (${copied.bytes} bytes)`);
      events.emit('copied', { direction: 'out', guest: copy.guest, host: copy.host, ...copied });
    } catch (error) {
      if (!(error instanceof LazybootError)) throw error;
      process.stderr.write(`lazyboot: ${error.toLine()}\n`);
      events.emit('copy-failed', { direction: 'out', guest: copy.guest, host: copy.host, message: error.toLine() });
      copiedAll = false;
    }
  }
  return copiedAll;
}
