// Every top-level CLI command module, in help order. Each module owns one command group.
import type { CommandModule } from 'yargs';

export const commands: CommandModule<any, any>[] = [];
