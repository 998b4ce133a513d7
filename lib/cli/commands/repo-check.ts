// `lazyboot repo check [--repair]`: one line per damaged or stray file, a summary, and exit 1 while
// damage remains. The walks themselves: lib/repo/repository-check.ts (a directory) and
// lib/repo/store-check.ts (an s3:// repository).
import type { Argv, CommandModule } from 'yargs';
import { Repository } from '../../repo/repository.js';
import { checkRepository, type CheckResult } from '../../repo/repository-check.js';
import { RepositoryDamaged } from '../../repo/errors.js';
import { UsageError } from '../../base/errors.js';

interface CheckArgs {
  repo: string;
  's3-endpoint'?: string;
  repair: boolean;
  verify: boolean;
  'min-age': number;
}

/** An import of a large image into a store can take this long between its first pack and its manifest. */
const DEFAULT_MIN_AGE_MINUTES = 60;

export const checkCommand: CommandModule<CheckArgs, CheckArgs> = {
  command: 'check',
  describe: 'check every file of the repository (--verify: every block too); --repair removes what nothing refers to (orphan packs, temp files, unfinished uploads) and fixes permissions',
  builder: (y) =>
    y
      .option('repair', { type: 'boolean', default: false, describe: 'remove what interrupted imports left (packs no index or manifest refers to, temp files, unfinished multipart uploads), make files 0600 and directories 0700' })
      .option('verify', { type: 'boolean', default: false, describe: 'also read every stored block and check its SHA-256' })
      .option('min-age', {
        type: 'number', default: DEFAULT_MIN_AGE_MINUTES,
        describe: 'in an s3:// repository, --repair removes unreferenced objects only once they are this many minutes old: younger ones may belong to an import still running (on any host; one that reuses an unreferenced pack makes it young again) and are only listed. 0 removes them at once: only when no import or snapshot into the repository is running',
      }) as Argv<any>,
  handler: async (args) => {
    const minAge = args['min-age'];
    if (!Number.isFinite(minAge) || minAge < 0) throw new UsageError(`invalid --min-age ${JSON.stringify(minAge)}`, 'give a number of minutes, 0 or more');
    const repo = await Repository.open(args.repo, { create: false, s3Endpoint: args['s3-endpoint'] });
    let result: CheckResult;
    if (repo.storage.isLocalDirectory) {
      await repo.close(); // the check reads the files itself
      result = await checkRepository(repo.dir, { repair: args.repair, verify: args.verify });
    } else {
      try {
        const { checkRepositoryStore } = await import('../../repo/store-check.js');
        result = await checkRepositoryStore(repo.storage, { repair: args.repair, verify: args.verify, minAgeMs: minAge * 60_000 });
      } finally {
        await repo.close();
      }
    }
    const { findings, images, packs } = result;
    for (const finding of findings) {
      const status = finding.repaired ? ' (repaired)' : finding.repair ? ' (--repair fixes this)' : '';
      process.stdout.write(`${finding.file}: ${finding.problem}${status}\n`);
    }
    // Young unreferenced objects are an import at work, not damage: noted, and the check passes.
    const young = findings.filter((finding) => finding.young).length;
    const left = findings.filter((finding) => !finding.repaired && !finding.young);
    const repaired = findings.filter((finding) => finding.repaired).length;
    const problems = findings.length - young;
    process.stdout.write(`${repo.dir}: ${images} image(s), ${packs} pack(s); ${problems} problem(s)${repaired ? `, ${repaired} repaired` : ''}${young ? `; ${young} recent unreferenced object(s) kept` : ''}\n`);
    if (left.length === 0) return;
    const fixable = left.some((finding) => finding.repair);
    throw new RepositoryDamaged(
      `repository ${repo.dir} has ${left.length} problem(s) left (listed above)`,
      fixable && !args.repair ? 'run `lazyboot repo check --repair` to remove what nothing refers to; restore or re-import the rest' : 'restore the files named above from a copy, re-import the images they belong to, or move stray files out',
    );
  },
};
