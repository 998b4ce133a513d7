// Every top-level CLI command module, in help order. Each module owns one command group.
import type { CommandModule } from 'yargs';
import { imageCommand } from './image.js';
import { repoCommand } from './repo.js';
import { diskCommand } from './disk.js';
import { bootCommand } from './boot.js';
import { runCommand } from './run.js';

export const commands: CommandModule<any, any>[] = [
  imageCommand,
  repoCommand,
  diskCommand,
  bootCommand,
  runCommand,
];
