#!/usr/bin/env node
// The `lazyboot` command: parses arguments with yargs and turns every error into one line.
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commandLoaders } from './commands/index.js';
import { RUN_EXIT } from './run-exit-codes.js';
import { asLazybootError } from '../base/system-error.js';
import { tuneProcess, type ProcessRole } from '../process-tuning.js';

/**
 * The command modules this invocation needs: only the named one when the first argument names a
 * command (a `disk serve` process stays small), else all of them (help, typos, suggestions).
 */
async function commandsFor(argv: readonly string[]): Promise<CommandModule<any, any>[]> {
  const named = commandLoaders.filter((loader) => loader.name === argv[0]);
  return Promise.all((named.length > 0 ? named : commandLoaders).map((loader) => loader.load()));
}

/** Commands that carry the data path (a COR device, in-process for boot and run): see process-tuning.ts. */
const PROCESS_ROLES: ReadonlyMap<string, ProcessRole> = new Map([['disk', 'disk-server'], ['boot', 'data-path'], ['run', 'data-path']]);

/** The exit code of a failure of lazyboot itself: `run` keeps 1 and 2 free for the guest command (run-exit-codes.ts). */
function failureExitCode(argv: readonly string[], otherwise: number): number {
  return argv[0] === 'run' ? RUN_EXIT.lazybootFailed : otherwise;
}

export async function main(argv: string[]): Promise<void> {
  const role = PROCESS_ROLES.get(argv[0] ?? '');
  if (role) tuneProcess(role);
  const commands = await commandsFor(argv);
  const parser = yargs(argv)
    .scriptName('lazyboot')
    .usage('$0 <command> [options]\n\nBoot a disk image before it has been copied; ship back only the blocks that changed.')
    .strict()
    .demandCommand(1, 'Name a command; see `lazyboot --help`.')
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((message, error, y) => {
      if (error) throw error;
      process.stderr.write(`lazyboot: ${message}\n(see \`lazyboot --help\`)\n`);
      process.exit(failureExitCode(argv, 2));
    });
  for (const command of commands) parser.command(command);
  await parser.parseAsync();
}

main(hideBin(process.argv)).catch((error: unknown) => {
  // Typed errors and failed system calls on a named file (a full disk, a directory without write
  // permission) are one line with what to do; anything else is a bug and says so.
  const known = asLazybootError(error);
  if (known) {
    process.stderr.write(`lazyboot: ${known.toLine()}\n`);
  } else {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`lazyboot: unexpected error: ${message}\n`);
    if (process.env.LAZYBOOT_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  }
  process.exitCode = failureExitCode(hideBin(process.argv), 1);
});
