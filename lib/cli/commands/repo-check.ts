// `lazyboot repo check [--repair]`: one line per damaged or stray file, a summary, and exit 1 while
// damage remains. The walk itself is lib/repo/repository-check.ts.
import type { Argv, CommandModule } from 'yargs';
import { Repository } from '../../repo/repository.js';
import { checkRepository } from '../../repo/repository-check.js';
import { RepositoryDamaged } from '../../repo/errors.js';
import { UsageError } from '../../base/errors.js';

interface CheckArgs {
  repo: string;
  's3-endpoint'?: string;
  repair: boolean;
  verify: boolean;
}

export const checkCommand: CommandModule<CheckArgs, CheckArgs> = {
  command: 'check',
  describe: 'check every file of the repository (--verify: every block too); --repair removes what nothing refers to (orphan packs, temp files) and fixes permissions',
  builder: (y) =>
    y
      .option('repair', { type: 'boolean', default: false, describe: 'remove orphan packs and temp files of interrupted writers, make files 0600 and directories 0700' })
      .option('verify', { type: 'boolean', default: false, describe: 'also read every stored block and check its SHA-256' }) as Argv<any>,
  handler: async (args) => {
    const repo = await Repository.open(args.repo, { create: false, s3Endpoint: args['s3-endpoint'] });
    await repo.close(); // the check reads the files itself
    if (!repo.storage.isLocalDirectory) {
      throw new UsageError(`repo check does not check an s3:// repository yet (${repo.dir})`, '`lazyboot image info NAME --verify --repo URI` checks one image\'s blocks');
    }
    const { findings, images, packs } = await checkRepository(repo.dir, { repair: args.repair, verify: args.verify });
    for (const finding of findings) {
      const status = finding.repaired ? ' (repaired)' : finding.repair ? ' (--repair fixes this)' : '';
      process.stdout.write(`${finding.file}: ${finding.problem}${status}\n`);
    }
    const left = findings.filter((finding) => !finding.repaired);
    const repaired = findings.length - left.length;
    process.stdout.write(`${repo.dir}: ${images} image(s), ${packs} pack(s); ${findings.length} problem(s)${repaired ? `, ${repaired} repaired` : ''}\n`);
    if (left.length === 0) return;
    const fixable = left.some((finding) => finding.repair);
    throw new RepositoryDamaged(
      `repository ${repo.dir} has ${left.length} problem(s) left (listed above)`,
      fixable && !args.repair ? 'run `lazyboot repo check --repair` to remove what nothing refers to; restore or re-import the rest' : 'restore the files named above from a copy, re-import the images they belong to, or move stray files out',
    );
  },
};
