// `lazyboot repo serve`: serve every image of a repository (and its manifests) over NBD.
import type { Argv, CommandModule } from 'yargs';
import { join } from 'node:path';
import { Repository } from '../../repo/repository.js';
import { repositoryExports } from '../../repo/export-provider.js';
import { startNbdServer } from '../../nbd/server.js';
import { UsageError } from '../../errors.js';
import { checkCommand } from './repo-check.js';

interface ServeArgs {
  repo: string;
  verify: boolean;
  socket?: string;
  listen?: string;
}

/** `$XDG_RUNTIME_DIR/lazyboot/repo.sock`, else `repo.sock` inside the repository directory. */
export function defaultSocketPath(repoDir: string): string {
  return process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, 'lazyboot', 'repo.sock') : join(repoDir, 'repo.sock');
}

export function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new UsageError(`invalid --listen ${JSON.stringify(value)}`, 'use HOST:PORT, e.g. 127.0.0.1:10809');
  return { host: match[1] ?? match[2]!, port };
}

const serveCommand: CommandModule<ServeArgs, ServeArgs> = {
  command: 'serve',
  describe: 'serve the repository over NBD: exports NAME@N, NAME (latest) and manifest:NAME[@N]',
  builder: (y) =>
    y
      .option('socket', { type: 'string', describe: 'unix socket path', defaultDescription: '$XDG_RUNTIME_DIR/lazyboot/repo.sock or REPO/repo.sock' })
      .option('listen', { type: 'string', describe: 'listen on TCP HOST:PORT instead (e.g. 127.0.0.1:10809)' })
      .option('verify', { type: 'boolean', default: true, describe: "verify each block's SHA-256 the first time it is served (--no-verify: only to test clients' own verification)" })
      .conflicts('socket', 'listen') as Argv<any>,
  handler: async (args) => {
    const log = (line: string): void => void process.stderr.write(`${new Date().toISOString()} ${line}\n`);
    // Listen for the stop signals before anything else: a client may signal as soon as it sees the URI.
    const stopped = new Promise<void>((resolve) => {
      const stop = (signal: string): void => {
        log(`${signal}: stopping`);
        resolve();
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    const repo = await Repository.open(args.repo, { create: false });
    const server = await startNbdServer({
      exports: repositoryExports(repo, { log, verifyBlocks: args.verify }),
      ...(args.listen ? { listen: parseListen(args.listen) } : { socketPath: args.socket ?? defaultSocketPath(repo.dir) }),
      log,
    });
    process.stdout.write(`serving ${repo.dir} at ${server.uri}\n`);
    await stopped;
    await server.close();
    await repo.close();
  },
};

export const repoCommand: CommandModule<any, any> = {
  command: 'repo <command>',
  describe: 'serve or check an image repository',
  builder: (y: Argv) =>
    y
      .option('repo', { type: 'string', describe: 'repository directory', default: Repository.defaultDir(), defaultDescription: '$XDG_DATA_HOME/lazyboot/repo' })
      .command(serveCommand as CommandModule<any, any>)
      .command(checkCommand as CommandModule<any, any>)
      .demandCommand(1, 'Name a repo command: serve or check.'),
  handler: () => {},
};
