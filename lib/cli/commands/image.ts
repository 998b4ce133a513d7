// `lazyboot image import|ls|info|export`: manage images in a repository directory (and `image trace`, image-trace.ts).
import type { Argv, CommandModule } from 'yargs';
import { Repository } from '../../repo/repository.js';
import { openImageSource } from '../../repo/image-source.js';
import { inspectImageFile, type InspectedImage } from '../../repo/image-file.js';
import { exportImageToFile } from '../../repo/export-file.js';
import { parseBlockSize, DEFAULT_BLOCK_SIZE } from '../../repo/block-size.js';
import { validateImageName, formatImageRef } from '../../repo/image-name.js';
import { LazybootError } from '../../base/errors.js';
import { installSignalTeardown } from '../../base/cleanup.js';
import { ImportFailed, RepositoryCorrupt } from '../../repo/errors.js';
import { ProgressBar } from '../progress-bar.js';
import { humanSize } from '../human-size.js';
import { imageTraceCommand } from './image-trace.js';
import { commandGroup, printFields, printTable } from '../command-output.js';
import { s3EndpointOption } from '../s3-endpoint-option.js';

interface RepoArgs {
  repo: string;
  's3-endpoint'?: string;
}

const repoOption = {
  type: 'string',
  describe: 'repository: a directory, or s3://BUCKET/PREFIX',
  default: Repository.defaultDir(),
  defaultDescription: '$XDG_DATA_HOME/lazyboot/repo',
} as const;


/** Only an import may create the repository (in a missing or empty directory); readers refuse. */
async function withRepository<T>(args: RepoArgs, work: (repo: Repository) => Promise<T>, options: { create?: boolean } = {}): Promise<T> {
  const repo = await Repository.open(args.repo, { create: options.create ?? false, s3Endpoint: args['s3-endpoint'] });
  try {
    return await work(repo);
  } finally {
    await repo.close();
  }
}

const importCommand: CommandModule<RepoArgs, RepoArgs & { file: string; name: string; 'block-size': string; format?: string }> = {
  command: 'import <file> <name>',
  describe: 'import a disk image file (raw; qcow2, vmdk, vpc, vhdx, vdi, qed with --format) as the next version of NAME',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'image file' })
      .positional('name', { type: 'string', demandOption: true, describe: 'image name' })
      .option('block-size', { type: 'string', default: '64K', describe: 'block size, a power of two from 4K to 4M' })
      .option('format', { type: 'string', describe: 'image format: raw, qcow2, vmdk, vpc, vhdx, vdi or qed (needed unless the file probes as raw)' }) as Argv<any>,
  handler: async (args) => {
    validateImageName(args.name);
    const blockSize = parseBlockSize(args['block-size'] ?? DEFAULT_BLOCK_SIZE);
    // The file is inspected (and refused) before the repository is opened or created.
    const image = await inspectImageFile(args.file, args.format);
    await withRepository(args, (repo) => importImageFile(repo, image, args.name, blockSize), { create: true });
  },
};

async function importImageFile(repo: Repository, image: InspectedImage, name: string, blockSize: number): Promise<void> {
  const source = openImageSource(image);
  const progress = new ProgressBar(`importing ${name}`, source.size);
  // Ctrl-C (or SIGTERM) stops the import before its manifest: the unfinished pack upload is
  // aborted, no version appears, and the command fails with one line.
  const interrupt = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => interrupt.abort(new ImportFailed(`import of ${name} interrupted by ${signal}; no version was committed`, 'run it again (`lazyboot repo check --repair` removes what an import killed outright leaves)'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let result;
  try {
    result = await repo.importImage(name, source.stream, { size: source.size, blockSize, onProgress: (n) => progress.update(n), signal: interrupt.signal });
    await source.finish();
  } catch (error) {
    source.cancel();
    // A conversion helper in the same process group got the signal too: the interrupt is the cause.
    const cause = interrupt.signal.aborted ? interrupt.signal.reason : error;
    await source.finish().catch((helperError: unknown) => {
      throw helperError instanceof LazybootError && !interrupt.signal.aborted ? helperError : cause;
    });
    throw cause;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    progress.done();
  }
  const blocks = result.manifest.blockCount;
  process.stdout.write(
    `${result.ref}: ${humanSize(result.manifest.size)} in ${blocks} blocks of ${humanSize(blockSize)}; ` +
      `${result.newBlocks} new (${humanSize(result.bytesStored)} stored, ${result.bytesStored} bytes), ` +
      `${result.presentBlocks} already present, ${result.zeroBlocks} zero\n`,
  );
}

const lsCommand: CommandModule<RepoArgs, RepoArgs> = {
  command: 'ls',
  describe: 'list the images and versions in the repository',
  handler: async (args) => {
    await withRepository(args, async (repo) => {
      const { images, damage } = await repo.listWithDamage();
      // Damage stays local: the rest is listed, and each damaged file gets one note.
      for (const { file, problem } of damage) process.stderr.write(`lazyboot: note: skipped ${file}: it ${problem} (see \`lazyboot repo check\`)\n`);
      if (images.length === 0) {
        process.stdout.write(`no images in ${repo.dir}\n`);
        return;
      }
      const rows = [['IMAGE', 'SIZE', 'BLOCK SIZE', 'CREATED']];
      for (const image of images) rows.push([formatImageRef(image.name, image.version), humanSize(image.size), humanSize(image.blockSize), image.created]);
      printTable(rows);
    });
  },
};

const infoCommand: CommandModule<RepoArgs, RepoArgs & { image: string; verify: boolean }> = {
  command: 'info <image>',
  describe: 'show an image version (NAME or NAME@N) and check that all its blocks are stored',
  builder: (y) =>
    y
      .positional('image', { type: 'string', demandOption: true })
      .option('verify', { type: 'boolean', default: false, describe: 'also read and hash every block' }) as Argv<any>,
  handler: async (args) => {
    await withRepository(args, async (repo) => {
      const manifest = await repo.resolve(args.image);
      const check = await repo.checkImage(manifest, { verify: args.verify });
      printFields([
        ['image', formatImageRef(manifest.name, manifest.version)],
        ['size', `${manifest.size} bytes (${humanSize(manifest.size)})`],
        ['block size', humanSize(manifest.blockSize)],
        ['blocks', `${check.blocks} (${check.zeroBlocks} zero, ${check.uniqueBlocks} distinct stored)`],
        ['created', manifest.created],
        ...(manifest.parent ? [['parent', manifest.parent] as const] : []),
        ['check', check.problems.length === 0 ? (args.verify ? 'all blocks present and verified' : 'all blocks present') : `${check.problems.length} problem(s)`],
      ]);
      for (const problem of check.problems) process.stdout.write(`  ${problem}\n`);
      if (check.problems.length > 0) {
        throw new RepositoryCorrupt(repo.dir, `is damaged: ${check.problems[0]}`);
      }
    });
  },
};

const exportCommand: CommandModule<RepoArgs, RepoArgs & { image: string; file: string }> = {
  command: 'export <image> <file>',
  describe: 'write an image version (NAME or NAME@N) to a raw file, verifying every block',
  builder: (y) => y.positional('image', { type: 'string', demandOption: true }).positional('file', { type: 'string', demandOption: true }) as Argv<any>,
  handler: async (args) => {
    // Ctrl-C removes the temp file beside FILE (export-file.ts registers it) before exiting 130.
    installSignalTeardown();
    await withRepository(args, async (repo) => {
      const manifest = await repo.resolve(args.image);
      const progress = new ProgressBar(`exporting ${formatImageRef(manifest.name, manifest.version)}`, manifest.size);
      try {
        await exportImageToFile(repo, manifest, args.file, (done) => progress.update(done));
      } finally {
        progress.done();
      }
      process.stdout.write(`${formatImageRef(manifest.name, manifest.version)} written to ${args.file} (${manifest.size} bytes)\n`);
    });
  },
};

export const imageCommand = commandGroup({
  name: 'image',
  describe: 'manage disk images in the repository',
  options: (y) => y.option('repo', repoOption).option('s3-endpoint', s3EndpointOption),
  subcommands: [importCommand, lsCommand, infoCommand, exportCommand, imageTraceCommand],
});
