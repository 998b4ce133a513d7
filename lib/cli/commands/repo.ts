// `lazyboot repo serve`: serve every image of a repository (and its manifests) over NBD.
import type { Argv, CommandModule } from 'yargs';
import { join } from 'node:path';
import { Repository } from '../../repo/repository.js';
import { servedTraceBytes, TRACE_EXPORT_PREFIX } from '../../trace/repository-traces.js';
import { repositoryExports } from '../../repo/export-provider.js';
import { checkListenAllowed, startNbdServer } from '../../nbd/server.js';
import { loadServerTls } from '../../nbd/tls.js';
import { UsageError } from '../../base/errors.js';
import { s3EndpointOption } from '../s3-endpoint-option.js';
import { checkCommand } from './repo-check.js';
import type { WriteServer } from '../../write/http-server.js';
import { commandGroup } from '../command-output.js';
import { serverLimitOptions, serverLimitsOf, type ServerLimitArgs } from '../server-limits.js';

interface ServeArgs extends ServerLimitArgs {
  repo: string;
  's3-endpoint'?: string;
  verify: boolean;
  socket?: string;
  listen?: string;
  'tls-creds'?: string;
  'tls-psk'?: string;
  'write-socket'?: string;
  'write-listen'?: string;
}

/** `$XDG_RUNTIME_DIR/lazyboot/repo.sock`, else `repo.sock` inside the repository directory (an s3:// repository has none). */
export function defaultSocketPath(repoDir: string): string {
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'lazyboot', 'repo.sock');
  if (repoDir.startsWith('s3://')) throw new UsageError(`${repoDir} has no directory for the default socket`, 'give --socket PATH or --listen HOST:PORT (or set XDG_RUNTIME_DIR)');
  return join(repoDir, 'repo.sock');
}

export function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new UsageError(`invalid --listen ${JSON.stringify(value)}`, 'use HOST:PORT, e.g. 127.0.0.1:10809');
  return { host: match[1] ?? match[2]!, port };
}

/** A repository server may have many hosts' COR devices as clients, each idle for long spells. */
const REPO_IDLE_TIMEOUT_S = 600;

const serveCommand: CommandModule<ServeArgs, ServeArgs> = {
  command: 'serve',
  describe: 'serve the repository over NBD: exports NAME@N, NAME (latest) and manifest:NAME[@N]',
  builder: (y) =>
    serverLimitOptions(y
      .option('socket', { type: 'string', describe: 'unix socket path (mode 0600)', defaultDescription: '$XDG_RUNTIME_DIR/lazyboot/repo.sock or REPO/repo.sock' })
      .option('listen', { type: 'string', describe: 'listen on TCP HOST:PORT instead (e.g. 127.0.0.1:10809); beyond loopback TLS is required' })
      .option('verify', { type: 'boolean', default: true, describe: "verify each block's SHA-256 the first time it is served (--no-verify: only to test clients' own verification)" })
      .option('tls-creds', { type: 'string', describe: 'require TLS with x509 certificates: DIR with ca-cert.pem, server-cert.pem, server-key.pem (as QEMU tls-creds-x509); clients need a certificate from the CA' })
      .option('tls-psk', { type: 'string', describe: 'require TLS with pre-shared keys: FILE of username:hexkey lines (as QEMU tls-creds-psk keys.psk)' })
      .option('write-socket', { type: 'string', describe: 'also accept snapshots (the write path, HTTP) on this unix socket (mode 0600)' })
      .option('write-listen', { type: 'string', describe: 'accept snapshots on loopback HOST:PORT instead (e.g. 127.0.0.1:10810)' })
      .conflicts('write-socket', 'write-listen')
      .conflicts('socket', 'listen')
      .conflicts('tls-creds', 'tls-psk'), { idleTimeoutS: REPO_IDLE_TIMEOUT_S, maxConnections: 64 }) as Argv<any>,
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
    const limits = serverLimitsOf(args);
    const listen = args.listen ? parseListen(args.listen) : undefined;
    if (listen) checkListenAllowed(listen.host, Boolean(args['tls-creds'] || args['tls-psk']));
    const tls = args['tls-creds'] || args['tls-psk']
      ? await loadServerTls({ ...(args['tls-creds'] ? { x509Dir: args['tls-creds'] } : {}), ...(args['tls-psk'] ? { pskFile: args['tls-psk'] } : {}) })
      : undefined;
    const writeListen = args['write-listen'] ? parseListen(args['write-listen']) : undefined;
    const repo = await Repository.open(args.repo, { create: false, s3Endpoint: args['s3-endpoint'] });
    let writes: WriteServer | undefined;
    try {
      const server = await startNbdServer({
        exports: repositoryExports(repo, {
          log, verifyBlocks: args.verify,
          // The merged boot trace of a version, beside its manifest (lib/trace/repository-traces.ts).
          objectExports: { [TRACE_EXPORT_PREFIX]: (ref) => servedTraceBytes(repo, ref, log) },
        }),
        ...(listen ? { listen } : { socketPath: args.socket ?? defaultSocketPath(repo.dir) }),
        log,
        limits,
        ...(tls ? { tls } : {}),
      });
      if (args['write-socket'] || writeListen) {
        try {
          // Loaded only here: a read-only server does not carry the write path.
          const { startWriteServer } = await import('../../write/http-server.js');
          const { RepositoryWriter } = await import('../../repo/repository-writer.js');
          writes = await startWriteServer({
            writer: new RepositoryWriter(repo), log,
            ...(writeListen ? { listen: writeListen } : { socketPath: args['write-socket']! }),
          });
        } catch (error) {
          await server.close();
          throw error;
        }
      }
      process.stdout.write(`serving ${repo.dir} at ${server.uri}\n`);
      if (writes) process.stdout.write(`accepting writes at ${writes.uri}\n`);
      if (tls) log(`clients must use ${tls.describe}`);
      await stopped;
      await Promise.all([server.close(), writes?.close()]);
    } finally {
      await repo.close();
    }
  },
};

export const repoCommand = commandGroup({
  name: 'repo',
  describe: 'serve or check an image repository',
  options: (y) => y
    .option('repo', { type: 'string', describe: 'repository: a directory, or s3://BUCKET/PREFIX', default: Repository.defaultDir(), defaultDescription: '$XDG_DATA_HOME/lazyboot/repo' })
    .option('s3-endpoint', s3EndpointOption),
  subcommands: [serveCommand, checkCommand],
});
