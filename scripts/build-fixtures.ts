// `npm run fixtures`: builds (or finds in the cache) the tiny and Debian test images and prints
// what it built, the sizes and the time. `--only tiny` builds just one; `--quiet` hides build output.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ensureFixture, type FixtureName } from '../fixtures/build.js';
import { LazybootError } from '../lib/base/errors.js';

const MIB = 1024 * 1024;

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .scriptName('build-fixtures')
    .option('only', { choices: ['tiny', 'debian', 'debian-plain', 'debian-cloud'] as const, describe: 'build only this image' })
    .option('quiet', { type: 'boolean', default: false, describe: 'do not echo the build steps' })
    .strict()
    .help()
    .parseAsync();
  // debian-cloud is derived from debian-plain (apt in a chroot of its root tree), so it comes after it.
  const names: FixtureName[] = args.only ? [args.only] : ['tiny', 'debian', 'debian-plain', 'debian-cloud'];
  for (const name of names) {
    const started = Date.now();
    const image = await ensureFixture(name, {
      log: args.quiet ? undefined : (line) => process.stdout.write(`  [${name}] ${line}\n`),
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const how = image.built ? `built in ${seconds} s` : `cached (${seconds} s)`;
    process.stdout.write(
      `${name}: ${image.path}  ${(image.sizeBytes / MIB).toFixed(0)} MiB apparent, ` +
        `${(image.allocatedBytes / MIB).toFixed(1)} MiB allocated, ${how}\n`,
    );
  }
}

main().catch((error: unknown) => {
  if (error instanceof LazybootError) {
    process.stderr.write(`build-fixtures: ${error.toLine()}\n`);
  } else {
    process.stderr.write(`build-fixtures: unexpected error: ${error instanceof Error ? error.stack : String(error)}\n`);
  }
  process.exitCode = 1;
});
