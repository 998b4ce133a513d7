// `lazyboot image trace ls|show|rm`: the boot traces kept on this host (lib/trace/trace-store.ts),
// named by image (`NAME`, `NAME@N`) or by manifest digest (a prefix of 8 hex digits or more).
import type { Argv, CommandModule } from 'yargs';
import { TraceStore, type StoredTraceSummary } from '../../trace/trace-store.js';
import { UnknownTrace } from '../../trace/errors.js';
import { humanSize } from '../human-size.js';
import { commandGroup, printFields, printTable } from '../command-output.js';

interface TraceArgs {
  'trace-dir': string;
}

const say = (line: string) => void process.stderr.write(`lazyboot: ${line}\n`);

async function findTraces(store: TraceStore, ref: string): Promise<StoredTraceSummary[]> {
  const found = await store.find(ref, say);
  if (found.length === 0) throw new UnknownTrace(ref, store.dir);
  return found;
}

const seconds = (ms: number | undefined) => (ms === undefined ? 'not reached' : `${(ms / 1000).toFixed(1)} s`);

const lsCommand: CommandModule<TraceArgs, TraceArgs> = {
  command: 'ls',
  describe: 'list the image versions with a stored boot trace',
  handler: async (args) => {
    const store = new TraceStore(args['trace-dir']);
    const traces = await store.list(say);
    if (traces.length === 0) {
      process.stdout.write(`no boot traces in ${store.dir}\n`);
      return;
    }
    const rows = [['IMAGE', 'MANIFEST', 'BOOTS', 'BLOCKS', 'BYTES', 'READY AT', 'LAST RECORDED']];
    for (const trace of traces) {
      rows.push([trace.imageRef, trace.manifestDigest.slice(0, 12), String(trace.recordings), String(trace.blocks), humanSize(trace.bytes), seconds(trace.readyMs), new Date(trace.lastRecordedAt).toISOString()]);
    }
    printTable(rows);
  },
};

const showCommand: CommandModule<TraceArgs, TraceArgs & { image: string; blocks: boolean }> = {
  command: 'show <image>',
  describe: 'show the boot trace of an image version (NAME, NAME@N or a manifest digest prefix)',
  builder: (y) =>
    y
      .positional('image', { type: 'string', demandOption: true })
      .option('blocks', { type: 'boolean', default: false, describe: 'list every block with the time it was first read' }) as Argv<any>,
  handler: async (args) => {
    const store = new TraceStore(args['trace-dir']);
    for (const summary of await findTraces(store, args.image)) {
      const loaded = (await store.load(summary.manifestDigest, say))!;
      const { trace } = loaded;
      const runs = runsOf(trace.entries.map((entry) => entry.block));
      printFields([
        ['image', trace.imageRef],
        ['manifest', trace.manifestDigest],
        ['boots', `${loaded.recordings} recorded, merged (blocks most boots read, in their median order)`],
        ['blocks', `${trace.entries.length} (${humanSize(trace.entries.length * trace.blockSize)}) in ${runs.length} runs`],
        ['storage-ready', seconds(trace.storageReadyMs)],
        ['ready', seconds(trace.readyMs)],
        ['recorded', new Date(trace.recordedAt).toISOString()],
      ]);
      if (args.blocks) for (const entry of trace.entries) process.stdout.write(`  ${String(entry.ms).padStart(8)} ms  block ${entry.block}\n`);
    }
  },
};

const rmCommand: CommandModule<TraceArgs, TraceArgs & { image: string }> = {
  command: 'rm <image>',
  describe: 'delete the boot trace of an image version (the next boot records a new one)',
  builder: (y) => y.positional('image', { type: 'string', demandOption: true }) as Argv<any>,
  handler: async (args) => {
    const store = new TraceStore(args['trace-dir']);
    for (const summary of await findTraces(store, args.image)) {
      await store.remove(summary.manifestDigest);
      process.stdout.write(`removed the boot trace of ${summary.imageRef} (manifest ${summary.manifestDigest.slice(0, 12)}, ${summary.recordings} recorded boots)\n`);
    }
  },
};

/** Runs of adjacent blocks in trace order (how many upstream requests the trace costs at least). */
function runsOf(blocks: readonly number[]): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (const block of blocks) {
    const last = runs[runs.length - 1];
    if (last && block === last[1] + 1) last[1] = block;
    else runs.push([block, block]);
  }
  return runs;
}

export const imageTraceCommand = commandGroup({
  name: 'trace',
  describe: 'the boot traces kept on this host (recorded by boot/run, replayed ahead of later boots)',
  options: (y) => y.option('trace-dir', { type: 'string', describe: 'where boot traces are kept', default: TraceStore.defaultDir(), defaultDescription: '$XDG_CACHE_HOME/lazyboot/traces' }),
  subcommands: [lsCommand, showCommand, rmCommand],
});
