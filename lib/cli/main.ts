#!/usr/bin/env node
// The `lazyboot` command: parses arguments with yargs and turns every error into one line.
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commandLoaders } from './commands/index.js';
import { LazybootError } from '../errors.js';
import { keepYoungGenerationSmall } from './young-generation.js';
import { tierUpLater } from './tier-up-later.js';

/**
 * The command modules this invocation needs: only the named one when the first argument names a
 * command (a `disk serve` process stays small), else all of them (help, typos, suggestions).
 */
async function commandsFor(argv: readonly string[]): Promise<CommandModule<any, any>[]> {
  const named = commandLoaders.filter((loader) => loader.name === argv[0]);
  return Promise.all((named.length > 0 ? named : commandLoaders).map((loader) => loader.load()));
}

/** Commands that run as long-lived disk processes, where RSS matters more than a few scavenges. */
const SMALL_HEAP_COMMANDS = new Set(['disk']);

/** Commands that serve a copy-on-read device (in-process for boot and run): see tier-up-later.ts. */
const DATA_PATH_COMMANDS = new Set(['disk', 'boot', 'run']);

export async function main(argv: string[]): Promise<void> {
  if (SMALL_HEAP_COMMANDS.has(argv[0] ?? '')) keepYoungGenerationSmall();
  if (DATA_PATH_COMMANDS.has(argv[0] ?? '')) tierUpLater();
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
      process.exit(2);
    });
  for (const command of commands) parser.command(command);
  await parser.parseAsync();
}

main(hideBin(process.argv)).catch((error: unknown) => {
  if (error instanceof LazybootError) {
    process.stderr.write(`lazyboot: ${error.toLine()}\n`);
  } else {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`lazyboot: unexpected error: ${message}\n`);
    if (process.env.LAZYBOOT_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  }
  process.exitCode = 1;
});
