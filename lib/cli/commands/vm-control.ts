// `lazyboot pivot NAME` and `lazyboot stop NAME`: drive a VM started by `lazyboot boot` through its
// control socket (lib/control/). An unknown name is one line and exit 1.
import type { Argv, CommandModule } from 'yargs';
import { callVm } from '../../control/client.js';
import { parseSizeBytes } from '../units.js';

interface NameArgs {
  name: string;
}

export const pivotCommand: CommandModule<any, NameArgs & { fill?: boolean; 'fill-rate'?: string }> = {
  command: 'pivot <name>',
  describe: 'pivot a running VM (booted with --pivot none) to QEMU\'s native graph; waits for storage-ready and the swap',
  builder: (y: Argv) =>
    y
      .positional('name', { type: 'string', demandOption: true, describe: 'the VM\'s name (see `lazyboot ps`)' })
      .option('fill', { type: 'boolean', describe: 'then fill the rest of the disk with QEMU\'s block-stream (--no-fill: only what the guest reads)', defaultDescription: 'true' })
      .option('fill-rate', { type: 'string', describe: 'fill speed limit in bytes per second (e.g. 20M; 0 = unlimited)', defaultDescription: 'the boot\'s --fill-rate' }) as Argv<any>,
  handler: async (args) => {
    const fillRate = args['fill-rate'] === undefined ? undefined : parseSizeBytes(args['fill-rate']);
    const result = await callVm<{ pauseMs: number; presentBlocks: number }>(args.name, 'pivot', { fill: args.fill, fillRate });
    process.stdout.write(`${args.name}: pivoted to native; the guest was paused ${result.pauseMs.toFixed(1)} ms; ${result.presentBlocks} blocks were local${args.fill === false ? '' : '; the fill runs (see `lazyboot ps`)'}\n`);
  },
};

export const stopCommand: CommandModule<any, NameArgs> = {
  command: 'stop <name>',
  describe: 'stop a running VM in order (fill paused, QEMU stopped and quit, the map updated); returns when it is down',
  builder: (y: Argv) => y.positional('name', { type: 'string', demandOption: true, describe: 'the VM\'s name (see `lazyboot ps`)' }) as Argv<any>,
  handler: async (args) => {
    const result = await callVm<{ state: string }>(args.name, 'stop');
    process.stdout.write(`${args.name}: ${result.state}\n`);
  },
};
