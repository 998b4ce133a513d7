// `lazyboot cache status|prune`: the host-wide block cache from the command line.
import type { Argv, CommandModule } from 'yargs';
import { openBlockCache } from '../../cache/open-cache.js';
import { defaultCacheDir } from '../../cache/cache-location.js';
import { humanSize } from '../human-size.js';
import { commandGroup } from '../command-output.js';
import { parseSizeBytes } from '../units.js';

interface CacheCommandArgs { dir?: string; 'cache-size'?: string; json: boolean }
interface PruneArgs extends CacheCommandArgs { keep?: string }

function common(y: Argv): Argv<any> {
  return y
    .option('dir', { type: 'string', describe: 'cache directory', defaultDescription: defaultCacheDir() })
    .option('cache-size', { type: 'string', describe: 'size limit to report and prune to (e.g. 20G)', defaultDescription: 'a tenth of the free space' })
    .option('json', { type: 'boolean', default: false, describe: 'one JSON object on stdout' });
}

async function open(args: CacheCommandArgs) {
  return openBlockCache({ dir: args.dir, maxBytes: args['cache-size'] === undefined ? undefined : parseSizeBytes(args['cache-size']) });
}

const statusCommand: CommandModule<any, CacheCommandArgs> = {
  command: 'status',
  describe: 'where the block cache is, how many blocks and bytes it holds, and its limit',
  builder: common,
  handler: async (args) => {
    const status = await (await open(args)).status();
    if (args.json) process.stdout.write(`${JSON.stringify(status)}\n`);
    else process.stdout.write(`${status.dir}: ${status.blocks} blocks, ${humanSize(status.bytes)} of ${humanSize(status.maxBytes)}\n`);
  },
};

const pruneCommand: CommandModule<any, PruneArgs> = {
  command: 'prune',
  describe: 'remove least recently used blocks down to --keep (default: the limit), and leftovers of killed writers',
  builder: (y: Argv) => common(y).option('keep', { type: 'string', describe: 'bytes to keep (0 empties the cache, image manifests included)', defaultDescription: 'the size limit' }) as Argv<any>,
  handler: async (args) => {
    const cache = await open(args);
    const keep = args.keep === undefined ? undefined : parseSizeBytes(args.keep);
    const removed = await cache.prune(keep);
    // Manifests (a few per image version) go only when the cache is emptied.
    if (keep === 0) await (await openBlockCache({ dir: cache.dir, maxBytes: cache.maxBytes }, 'manifests')).prune(0);
    if (args.json) process.stdout.write(`${JSON.stringify(removed)}\n`);
    else process.stdout.write(`removed ${removed.blocks} blocks (${humanSize(removed.bytes)}) and ${removed.temporaries} leftover temporary files from ${cache.dir}\n`);
  },
};

export const cacheCommand = commandGroup({
  name: 'cache',
  describe: 'the host-wide block cache shared by every VM of this user',
  subcommands: [statusCommand, pruneCommand],
});
