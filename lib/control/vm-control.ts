// A launched VM's control socket, for the process that owns the VM (`lazyboot boot`): claims the
// name before anything boots (a name in use is refused at once), then answers for the VM once it
// exists, and closes after the VM's teardown. Without a name, the first free `IMAGE-N` is taken.
import type { LazyVm } from '../launch.js';
import { freeVmName } from './client.js';
import type { ControlCommands } from './commands.js';
import { ControlServer, VmNameInUse } from './server.js';
import { vmControlCommands, type VmIdentity } from './vm-commands.js';

export interface VmControl {
  readonly name: string;
  readonly socketPath: string;
  /** The registry: add a command here (before or after attach) to serve it. */
  readonly commands: ControlCommands;
  /** The VM is up: requests go to it from now on; the socket closes after its teardown. */
  attach(vm: LazyVm): void;
  close(): Promise<void>;
}

export async function openVmControl(options: { name?: string; image: string; disk?: string; dir?: string }): Promise<VmControl> {
  let vm: LazyVm | undefined;
  const listen = async (name: string) => {
    const identity: VmIdentity = { name, image: options.image, disk: options.disk };
    const commands = vmControlCommands(identity, () => vm);
    return { commands, server: await ControlServer.listen(name, commands, { dir: options.dir }) };
  };
  let opened: Awaited<ReturnType<typeof listen>>;
  if (options.name !== undefined) {
    opened = await listen(options.name);
  } else {
    // Two boots may pick the same free name at once: the loser takes the next one.
    for (let attempt = 0; ; attempt++) {
      try {
        opened = await listen(await freeVmName(options.image, options.dir));
        break;
      } catch (error) {
        if (!(error instanceof VmNameInUse) || attempt >= 5) throw error;
      }
    }
  }
  const { commands, server } = opened;
  return {
    name: server.name,
    socketPath: server.socketPath,
    commands,
    attach(launched) {
      vm = launched;
      void launched.closed.then(() => server.close());
    },
    close: () => server.close(),
  };
}
