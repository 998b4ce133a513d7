// Maps a backend failure onto the NBD error value the client sees.
import { BlockError, type BlockErrorCode } from '../block/backend.js';
import * as P from './protocol.js';

const ERRNO: Record<BlockErrorCode, number> = {
  EPERM: P.NBD_EPERM,
  EIO: P.NBD_EIO,
  ENOMEM: P.NBD_ENOMEM,
  EINVAL: P.NBD_EINVAL,
  ENOSPC: P.NBD_ENOSPC,
  EOVERFLOW: P.NBD_EOVERFLOW,
  ENOTSUP: P.NBD_ENOTSUP,
  ESHUTDOWN: P.NBD_ESHUTDOWN,
};

export function nbdErrno(error: unknown): number {
  return error instanceof BlockError ? ERRNO[error.code] ?? P.NBD_EIO : P.NBD_EIO;
}
