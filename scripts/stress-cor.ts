// Long crash-safety stress of the copy-on-read device (the npm-test version is test/cor-crash.test.ts):
// many rounds of SIGKILL during fill + streamed qemu-io writes with flushes, invariants after each.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runCrashIterations } from '../test/cor-crash-harness.js';

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .option('rounds', { type: 'number', default: 10, describe: 'rounds, each a fresh image and disk' })
    .option('kills', { type: 'number', default: 40, describe: 'kills per round' })
    .option('blocks', { type: 'number', default: 4096, describe: 'image size in 64 KiB blocks' })
    .option('fill-rate', { type: 'number', default: 4 * 1024 * 1024, describe: 'background fill bytes/s' })
    .strict().help().parseAsync();
  let violations = 0;
  let kills = 0;
  let flushed = 0;
  for (let round = 0; round < args.rounds; round++) {
    const dir = await mkdtemp(join(tmpdir(), 'lazyboot-stress-cor-'));
    try {
      const result = await runCrashIterations({
        dir, iterations: args.kills, blocks: args.blocks, fillRate: args['fill-rate'],
        log: (line) => process.stdout.write(`round ${round}: ${line}\n`),
      });
      kills += result.iterations;
      flushed += result.confirmedWrites;
      violations += result.violations.length;
      for (const violation of result.violations) process.stdout.write(`VIOLATION round ${round}: ${violation}\n`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  process.stdout.write(`stress-cor: ${kills} kills, ${flushed} flushed writes checked, ${violations} violations\n`);
  if (violations > 0) process.exitCode = 1;
}

main().catch((error) => {
  process.stderr.write(`stress-cor: ${(error as Error).stack ?? error}\n`);
  process.exitCode = 1;
});
