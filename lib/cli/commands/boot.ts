// `lazyboot boot IMAGE`: boot an image from a repository in a transient VM on a copy-on-read disk,
// print milestones as they happen, run until the guest powers off (or Ctrl-C), then a summary.
import type { Argv, CommandModule } from 'yargs';
import { installSignalTeardown, teardownOnUncaughtException } from '../../base/cleanup.js';
import { launch } from '../../launch.js';
import { summaryOf } from './snapshot.js';
import { bootOptions, corLog, launchOptionsOf, printMilestones, summaryLines, type BootArgs } from '../boot-options.js';

export const bootCommand: CommandModule<any, BootArgs> = {
  command: 'boot <image>',
  describe: 'boot an image lazily in a transient VM (blocks fetched on first read); runs until the guest powers off or Ctrl-C',
  builder: (y: Argv) => bootOptions(y),
  handler: async (args) => {
    // The CLI owns its process: Ctrl-C/SIGTERM and crashes tear the VM down (the library does not).
    installSignalTeardown();
    teardownOnUncaughtException();
    const startedAt = Date.now();
    const say = (line: string) => void process.stderr.write(`lazyboot: ${line}\n`);
    // `boot` pivots by default: the guest runs on QEMU's own block layer once its driver has the disk.
    const pivot = args.pivot ?? 'live';
    const vm = await launch({ ...launchOptionsOf(args), pivot, fill: args.fill ?? pivot === 'live', agent: 'optional', log: corLog(say) });
    printMilestones(vm, say);
    vm.events.on((event) => {
      if (event.type !== 'torn-down') return;
      const lines = summaryLines(vm, startedAt);
      if (!args.disk) lines.push('  (temporary disk: deleted)');
      process.stdout.write(`${lines.join('\n')}\n`);
    });
    await vm.closed;
    // --snapshot-on-exit: shipped once the disk closed (a failed boot still says why it failed first).
    const shipped = await vm.snapshotted.catch((error: Error) => error);
    if (vm.failure) throw vm.failure;
    if (shipped instanceof Error) throw shipped;
    if (shipped) process.stdout.write(`snapshot on exit: ${summaryOf(shipped)}\n`);
  },
};
