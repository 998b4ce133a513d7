// The control socket's command registry: a name, one line of help, and a handler from the request's
// arguments to a JSON-able result. The VM's owner (the boot command) fills it; a part that adds a
// command (e.g. `snapshot`) registers one more handler and a CLI command that calls it — the server
// and the protocol stay as they are.
import { UsageError } from '../base/errors.js';

export type ControlHandler = (args: Record<string, unknown>) => Promise<unknown> | unknown;

export interface ControlCommand {
  readonly describe: string;
  readonly handler: ControlHandler;
}

export class ControlCommands {
  readonly #commands = new Map<string, ControlCommand>();

  constructor() {
    this.add('help', 'the commands this VM answers', () => [...this.#commands].map(([name, command]) => ({ name, describe: command.describe })));
  }

  /** Adds a command; a name already taken is a programming error. */
  add(name: string, describe: string, handler: ControlHandler): this {
    if (this.#commands.has(name)) throw new Error(`control command ${name} is registered twice`);
    this.#commands.set(name, { describe, handler });
    return this;
  }

  has(name: string): boolean {
    return this.#commands.has(name);
  }

  async run(name: string, args: Record<string, unknown>): Promise<unknown> {
    const command = this.#commands.get(name);
    if (!command) throw new UsageError(`unknown control command ${JSON.stringify(name)}`, `this VM answers: ${[...this.#commands.keys()].join(', ')}`);
    return command.handler(args);
  }
}
