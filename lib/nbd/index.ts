// 'lazyboot/nbd': the NBD client (a BlockBackend) and server (over any ExportProvider), with TLS,
// and the repository's exports for serving it the way `lazyboot repo serve` does.
export { NbdClient, parseNbdUri, formatNbdUri, isNbdUri, withTlsCredentials, type NbdConnectOptions, type NbdTarget } from './client.js';
export { NbdConnectError } from './errors.js';
export { startNbdServer, type NbdServer, type NbdServerOptions } from './server.js';
export { describeConnectionEvent, type ConnectionEvent, type ConnectionEventDetail } from './connection-events.js';
export { NbdListenFailed } from './errors.js';
export type { NbdServerLimits } from './limits.js';
export type { ExportProvider } from './export-provider.js';
export { loadServerTls, type ServerTls } from './tls.js';
export { TlsCredentialsInvalid } from './errors.js';
export { repositoryExports, MANIFEST_EXPORT_PREFIX, type RepositoryExportsOptions } from '../repo/export-provider.js';
