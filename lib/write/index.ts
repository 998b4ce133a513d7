// 'lazyboot/write': the repository's write path — a session adds blocks (offering digests first),
// then commits a version atomically; in-process over a directory, or over HTTP beside `repo serve`.
export type { WriteTarget, SessionRequest, SessionStart, OfferedBlock, StoredBlocks, ImageCommit, CommitResult, WireCounters } from '../repo/write-target.js';
export { RepositoryWriter } from '../repo/repository-writer.js';
export { openWriteTarget, canonicalWriteUri } from './open-write-target.js';
export { startWriteServer, type WriteServer, type WriteServerOptions } from './http-server.js';
export { WriteServerFailed } from './errors.js';
export { HttpWriteTarget } from './http-client.js';
export { WriteTargetUnreachable } from './errors.js';
export { WriteRefused } from './errors.js';
