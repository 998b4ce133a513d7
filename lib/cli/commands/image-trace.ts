// `lazyboot image trace ls|show|rm`: the boot traces kept in the repository (`--repo`: a directory
// or the write path of `repo serve`; lib/trace/repository-traces.ts) and in this host's cache
// (lib/trace/trace-store.ts), named by image (`NAME`, `NAME@N`) or by manifest digest (a prefix of
// 8 hex digits or more).
import { access } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import { TraceStore, matchTraces, type LoadedTrace, type StoredTraceSummary } from '../../trace/trace-store.js';
import { listRepositoryTraces, loadRepositoryTrace, TRACE_OBJECT_KIND } from '../../trace/repository-traces.js';
import { UnknownTrace } from '../../trace/errors.js';
import { Repository } from '../../repo/repository.js';
import { openWriteTarget } from '../../write/open-write-target.js';
import type { WriteTarget } from '../../repo/write-target.js';
import { humanSize } from '../human-size.js';
import { s3EndpointOption } from '../s3-endpoint-option.js';
import { commandGroup, printFields, printTable } from '../command-output.js';

interface TraceArgs {
  'trace-dir': string;
  repo?: string;
  's3-endpoint'?: string;
}

const say = (line: string) => void process.stderr.write(`lazyboot: ${line}\n`);

/** One place traces are kept: the repository or the host cache. */
interface TracePlace {
  readonly label: 'repository' | 'host cache';
  readonly where: string;
  list(): Promise<StoredTraceSummary[]>;
  load(summary: StoredTraceSummary): Promise<LoadedTrace | undefined>;
  remove(summary: StoredTraceSummary): Promise<void>;
}

function hostCachePlace(store: TraceStore): TracePlace {
  return {
    label: 'host cache', where: store.dir,
    list: () => store.list(say),
    load: (summary) => store.load(summary.manifestDigest, say),
    remove: (summary) => store.remove(summary.manifestDigest),
  };
}

function repositoryPlace(target: WriteTarget): TracePlace {
  return {
    label: 'repository', where: target.uri,
    list: () => listRepositoryTraces(target, say),
    load: (summary) => loadRepositoryTrace(target, summary.imageRef, summary.manifestDigest, say),
    remove: async (summary) => void (await target.removeObjects(summary.imageRef, TRACE_OBJECT_KIND)),
  };
}

/** The repository (given, or the default one if it exists) and the host cache; the repository's write path is closed after. */
async function withPlaces(args: TraceArgs, work: (places: TracePlace[]) => Promise<void>): Promise<void> {
  // The default repository (the `image` commands' --repo default) only if there is one.
  const defaultDir = Repository.defaultDir();
  const uri = args.repo === undefined || args.repo === defaultDir ? await access(defaultDir).then(() => defaultDir, () => undefined) : args.repo;
  const target = uri === undefined ? undefined : await openWriteTarget(uri, { s3Endpoint: args['s3-endpoint'] });
  try {
    await work([...(target ? [repositoryPlace(target)] : []), hostCachePlace(new TraceStore(args['trace-dir']))]);
  } finally {
    await target?.close();
  }
}

/** The traces `ref` names, in every place; none at all is an error. */
async function findTraces(places: TracePlace[], ref: string): Promise<Array<{ place: TracePlace; summary: StoredTraceSummary }>> {
  const found: Array<{ place: TracePlace; summary: StoredTraceSummary }> = [];
  for (const place of places) for (const summary of matchTraces(await place.list(), ref)) found.push({ place, summary });
  if (found.length === 0) throw new UnknownTrace(ref, places.map((place) => `the ${place.label} ${place.where}`).join(' or '));
  return found;
}

const seconds = (ms: number | undefined) => (ms === undefined ? 'not reached' : `${(ms / 1000).toFixed(1)} s`);

const lsCommand: CommandModule<TraceArgs, TraceArgs> = {
  command: 'ls',
  describe: 'list the image versions with a stored boot trace (in the repository and in the host cache)',
  handler: (args) => withPlaces(args, async (places) => {
    const rows = [['IMAGE', 'MANIFEST', 'BOOTS', 'BLOCKS', 'BYTES', 'READY AT', 'LAST RECORDED', 'KEPT IN']];
    for (const place of places) {
      for (const trace of await place.list()) {
        rows.push([trace.imageRef, trace.manifestDigest.slice(0, 12), String(trace.recordings), String(trace.blocks), humanSize(trace.bytes), seconds(trace.readyMs), new Date(trace.lastRecordedAt).toISOString(), place.label]);
      }
    }
    if (rows.length === 1) {
      process.stdout.write(`no boot traces in ${places.map((place) => place.where).join(' or ')}\n`);
      return;
    }
    printTable(rows);
  }),
};

const showCommand: CommandModule<TraceArgs, TraceArgs & { image: string; blocks: boolean }> = {
  command: 'show <image>',
  describe: 'show the boot trace of an image version (NAME, NAME@N or a manifest digest prefix)',
  builder: (y) =>
    y
      .positional('image', { type: 'string', demandOption: true })
      .option('blocks', { type: 'boolean', default: false, describe: 'list every block with the time it was first read' }) as Argv<any>,
  handler: (args) => withPlaces(args, async (places) => {
    for (const { place, summary } of await findTraces(places, args.image)) {
      const loaded = await place.load(summary);
      if (!loaded) continue; // removed meanwhile
      const { trace } = loaded;
      const runs = runsOf(trace.entries.map((entry) => entry.block));
      printFields([
        ['image', trace.imageRef],
        ['manifest', trace.manifestDigest],
        ['kept in', `the ${place.label} ${place.where}`],
        ['boots', `${loaded.recordings} recorded, merged (blocks most boots read, in their median order)`],
        ['blocks', `${trace.entries.length} (${humanSize(trace.entries.length * trace.blockSize)}) in ${runs.length} runs`],
        ['storage-ready', seconds(trace.storageReadyMs)],
        ['ready', seconds(trace.readyMs)],
        ['recorded', new Date(trace.recordedAt).toISOString()],
      ]);
      if (args.blocks) for (const entry of trace.entries) process.stdout.write(`  ${String(entry.ms).padStart(8)} ms  block ${entry.block}\n`);
    }
  }),
};

const rmCommand: CommandModule<TraceArgs, TraceArgs & { image: string }> = {
  command: 'rm <image>',
  describe: 'delete the boot trace of an image version, in the repository and the host cache (the next boot records a new one)',
  builder: (y) => y.positional('image', { type: 'string', demandOption: true }) as Argv<any>,
  handler: (args) => withPlaces(args, async (places) => {
    for (const { place, summary } of await findTraces(places, args.image)) {
      await place.remove(summary);
      process.stdout.write(`removed the boot trace of ${summary.imageRef} (manifest ${summary.manifestDigest.slice(0, 12)}, ${summary.recordings} recorded boots) from the ${place.label} ${place.where}\n`);
    }
  }),
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
  describe: 'the boot traces recorded by boot/run and replayed ahead of later boots (in the repository and the host cache)',
  options: (y) => y
    .option('repo', { type: 'string', describe: 'the repository: a directory, or the write path of `repo serve` (http+unix:///?socket=PATH, http://127.0.0.1:PORT)', defaultDescription: '$XDG_DATA_HOME/lazyboot/repo, if it exists' })
    .option('trace-dir', { type: 'string', describe: 'the host cache of boot traces', default: TraceStore.defaultDir(), defaultDescription: '$XDG_CACHE_HOME/lazyboot/traces' })
    .option('s3-endpoint', s3EndpointOption),
  subcommands: [lsCommand, showCommand, rmCommand],
});
