// 'lazyboot/nbd': the NBD client (a BlockBackend) and server (over any ExportProvider), with TLS,
// and the repository's exports for serving it the way `lazyboot repo serve` does.
export { NbdClient, NbdConnectError, parseNbdUri, formatNbdUri, isNbdUri, withTlsCredentials, type NbdConnectOptions, type NbdTarget } from './client.js';
export { startNbdServer, NbdListenFailed, type NbdServer, type NbdServerOptions } from './server.js';
export type { NbdServerLimits } from './limits.js';
export type { ExportProvider } from './export-provider.js';
export { loadServerTls, TlsCredentialsInvalid, type ServerTls } from './tls.js';
export { repositoryExports, MANIFEST_EXPORT_PREFIX, type RepositoryExportsOptions } from '../repo/export-provider.js';
