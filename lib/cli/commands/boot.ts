// `lazyboot boot IMAGE`: boot an image from a repository in a transient VM on a copy-on-read disk,
// print milestones as they happen, run until the guest powers off (or Ctrl-C), then a summary.
import type { Argv, CommandModule } from 'yargs';
import { installSignalTeardown, teardownOnUncaughtException } from '../../base/cleanup.js';
import { launch } from '../../launch.js';
import { summaryOf } from './snapshot.js';
import { bootOptions, deviceLog, launchOptionsOf, printMilestones, summaryLines, type BootArgs } from '../boot-options.js';
import { openVmControl } from '../../control/vm-control.js';
import { emitBootSummary, followBootAsJson } from '../boot-events.js';
import { RunEventLog } from '../run-events.js';

export const bootCommand: CommandModule<any, BootArgs & { name?: string; json: boolean }> = {
  command: 'boot <image>',
  describe: 'boot an image lazily in a transient VM (blocks fetched on first read); runs until the guest powers off, Ctrl-C or `lazyboot stop NAME`',
  builder: (y: Argv) =>
    bootOptions(y)
      .option('name', { type: 'string', describe: 'the VM\'s name for `lazyboot ps`, `pivot NAME`, `stop NAME` (its control socket)', defaultDescription: 'IMAGE-N, the first free' })
      .option('json', { type: 'boolean', default: false, describe: 'milestones, fill progress and the summary as JSON lines on stdout (instead of the text lines)' }),
  handler: async (args) => {
    // The CLI owns its process: Ctrl-C/SIGTERM and crashes tear the VM down (the library does not).
    installSignalTeardown();
    teardownOnUncaughtException();
    const startedAt = Date.now();
    const say = (line: string) => void process.stderr.write(`lazyboot: ${line}\n`);
    const json = RunEventLog.open(args.json, 1);
    // `boot` pivots by default: the guest runs on QEMU's own block layer once its driver has the disk.
    const pivot = args.pivot ?? 'live';
    // The name is claimed before anything boots: a name in use is refused at once.
    const control = await openVmControl({ name: args.name, image: args.image, disk: args.disk });
    let vm;
    try {
      vm = await launch({ ...launchOptionsOf(args), pivot, fill: args.fill ?? pivot !== 'none', agent: 'optional', ...deviceLog(say) });
    } catch (error) {
      await control.close();
      throw error;
    }
    control.attach(vm);
    // Said once the VM exists (a boot that fails at once has nothing to drive).
    if (json.enabled) json.emit('control', { name: control.name, socket: control.socketPath });
    else say(`VM ${control.name}: control socket ${control.socketPath} (\`lazyboot ps\`, \`lazyboot pivot ${control.name}\`, \`lazyboot stop ${control.name}\`)`);
    if (json.enabled) followBootAsJson(vm, json);
    else printMilestones(vm, say);
    vm.events.on((event) => {
      if (event.type !== 'torn-down') return;
      if (json.enabled) return emitBootSummary(vm, json, !args.disk);
      const lines = summaryLines(vm, startedAt);
      if (!args.disk) lines.push('  (temporary disk: deleted)');
      process.stdout.write(`${lines.join('\n')}\n`);
    });
    await vm.closed;
    await control.close(); // after the teardown: a `stop` in flight gets its answer first
    // --snapshot-on-exit: shipped once the disk closed (a failed boot still says why it failed first).
    const shipped = await vm.snapshotted.catch((error: Error) => error);
    if (vm.failure) throw vm.failure;
    if (shipped instanceof Error) throw shipped;
    if (shipped) process.stdout.write(`snapshot on exit: ${summaryOf(shipped)}\n`);
  },
};
