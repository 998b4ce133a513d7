// `lazyboot run IMAGE -- CMD ARGS...`: for CI. Boots the image lazily, waits for the guest agent,
// runs the command in the guest, prints its output, tears down, and exits with its exit code.
import type { Argv, CommandModule } from 'yargs';
import { installSignalTeardown, teardownOnUncaughtException } from '../../base/cleanup.js';
import { UsageError } from '../../base/errors.js';
import { launch } from '../../launch.js';
import { bootOptions, corLog, launchOptionsOf, printMilestones, type BootArgs } from '../boot-options.js';

export const runCommand: CommandModule<any, BootArgs & { '--'?: (string | number)[]; quiet: boolean }> = {
  command: 'run <image>',
  describe: 'boot an image lazily, run `-- CMD ARGS...` in the guest (guest agent), exit with its exit code',
  builder: (y: Argv) =>
    bootOptions(y.parserConfiguration({ 'populate--': true }))
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no milestones on stderr' })
      .example('$0 run debian -- cat /etc/os-release', 'print the guest’s os-release') as Argv<any>,
  handler: async (args) => {
    const command = (args['--'] ?? []).map(String);
    if (command.length === 0) throw new UsageError('no command to run', 'put it after --, e.g. lazyboot run debian -- uname -a');
    // The CLI owns its process: Ctrl-C/SIGTERM and crashes tear the VM down (the library does not).
    installSignalTeardown();
    teardownOnUncaughtException();
    const say = args.quiet ? () => {} : (line: string) => void process.stderr.write(`lazyboot: ${line}\n`);
    const vm = await launch({ ...launchOptionsOf(args), agent: true, log: corLog(say) });
    printMilestones(vm, say);
    try {
      await vm.ready;
      const result = await vm.exec(command[0]!, command.slice(1));
      process.stdout.write(result.stdout);
      process.stderr.write(result.stderr);
      process.exitCode = result.exitCode;
    } finally {
      await vm.close();
    }
  },
};
