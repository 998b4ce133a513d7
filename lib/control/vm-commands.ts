// The commands a running VM answers on its control socket: `status` (what `lazyboot ps` shows),
// `pivot` (a VM booted with --pivot none moves to QEMU's native graph), `snapshot` (a point-in-time
// snapshot of the running disk: `lazyboot snapshot NAME --as IMAGE`) and `stop` (teardown in
// order, answered once it is done). The VM may still be starting when a request comes: `status`
// says so, the others ask to try again. More commands are added with `commands.add(…)`.
import { UsageError } from '../base/errors.js';
import type { LazyVm, LazyVmStatus } from '../launch.js';
import { ControlCommands } from './commands.js';
import { CONTROL_PROTOCOL_VERSION } from './protocol.js';

export interface VmIdentity {
  readonly name: string;
  /** The image as asked for (NAME or NAME@N); the VM's status gives the version it resolved to. */
  readonly image: string;
  /** The disk's path, when the user gave one. */
  readonly disk: string | undefined;
}

/** What `status` returns (and `lazyboot ps --json` prints per VM). */
export interface VmStatusReport extends Partial<LazyVmStatus> {
  readonly protocol: number;
  readonly name: string;
  readonly image: string;
  readonly disk: string | null;
  /** The lazyboot process that owns the VM. */
  readonly pid: number;
  readonly uptimeMs: number;
  readonly state: LazyVmStatus['state'];
}

class VmStillStarting extends UsageError {
  constructor(name: string, action: string) {
    super(`${name} is still starting: cannot ${action} yet`, 'try again in a moment');
  }
}

function optionalBoolean(args: Record<string, unknown>, key: string): boolean | undefined {
  const value = args[key];
  if (value === undefined || typeof value === 'boolean') return value;
  throw new UsageError(`${key} must be true or false, not ${JSON.stringify(value)}`);
}

function optionalString(args: Record<string, unknown>, key: string): string | undefined {
  const value = args[key];
  if (value === undefined || typeof value === 'string') return value;
  throw new UsageError(`${key} must be a string, not ${JSON.stringify(value)}`);
}

function optionalRate(args: Record<string, unknown>, key: string): number | undefined {
  const value = args[key];
  if (value === undefined || (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0)) return value;
  throw new UsageError(`${key} must be a whole number of bytes per second (0 = unlimited), not ${JSON.stringify(value)}`);
}

/** The registry for one VM; `vmOf()` is undefined until launch() returned. */
export function vmControlCommands(identity: VmIdentity, vmOf: () => LazyVm | undefined): ControlCommands {
  const startedAt = Date.now();
  const running = (action: string) => {
    const vm = vmOf();
    if (!vm) throw new VmStillStarting(identity.name, action);
    return vm;
  };
  return new ControlCommands()
    .add('status', 'state, readiness, pivot and fill, bytes fetched', (): VmStatusReport => {
      const vm = vmOf();
      const base = { protocol: CONTROL_PROTOCOL_VERSION, name: identity.name, image: vm?.image ?? identity.image, disk: identity.disk ?? null, pid: process.pid, uptimeMs: Date.now() - startedAt };
      return vm ? { ...base, ...vm.status() } : { ...base, state: 'starting' };
    })
    .add('pivot', 'pivot to QEMU\'s native graph now (args: fill, fillRate); answers once the guest runs on it', async (args) => {
      const fill = optionalBoolean(args, 'fill');
      const fillRate = optionalRate(args, 'fillRate');
      const outcome = await running('pivot').pivot({ fill, fillRate });
      return { pauseMs: outcome.pauseMs, drainMs: outcome.drainMs, presentBlocks: outcome.presentBlocks };
    })
    .add('snapshot', 'a point-in-time snapshot of the running disk as a new image version (args: as, to, freeze); answers once committed', async (args) => {
      const as = optionalString(args, 'as');
      if (as === undefined) throw new UsageError('snapshot needs "as": the image name of the new version');
      return running('snapshot').snapshot({ as, to: optionalString(args, 'to'), freeze: optionalBoolean(args, 'freeze') });
    })
    .add('stop', 'tear the VM down in order (fill paused, QEMU stopped and quit, map folded); answers when done', async () => {
      const vm = running('stop');
      await vm.close();
      return { state: vm.state };
    });
}
