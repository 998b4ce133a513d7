// The one table between the backend's error codes and the NBD error values on the wire, read in
// both directions: the server maps a backend failure onto what the client sees, the client maps
// the server's value back onto a BlockError.
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

const CODE_BY_ERRNO = new Map<number, BlockErrorCode>(Object.entries(ERRNO).map(([code, errno]) => [errno, code as BlockErrorCode]));

/** The NBD error value for a failure; anything but a BlockError is EIO. */
export function nbdErrno(error: unknown): number {
  return error instanceof BlockError ? ERRNO[error.code] ?? P.NBD_EIO : P.NBD_EIO;
}

/** The backend code for an NBD error value; a value the spec does not define is EIO. */
export function blockErrorCode(errno: number): BlockErrorCode {
  return CODE_BY_ERRNO.get(errno) ?? 'EIO';
}
