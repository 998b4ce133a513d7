// What the NBD server serves: a named set of BlockBackends. The provider owns the backends;
// the server never closes them.
import type { BlockBackend } from '../block/backend.js';

export interface ExportProvider {
  /** Exports shown to NBD_OPT_LIST. */
  list(): Promise<Array<{ name: string; description?: string }>>;
  /** The backend for `name`, or undefined if there is no such export. */
  open(name: string): Promise<BlockBackend | undefined>;
}
