// The root of every typed error a user can act on. The CLI prints `message` (one line) and exits
// non-zero; `hint` says what to do about it. Part of lib/base/: every part (lib/*, vmm/, guest/)
// may import it, and it imports nothing of the project, so no two parts import each other through it.

export class LazybootError extends Error {
  constructor(message: string, readonly hint?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }

  /** The one line the CLI prints. */
  toLine(): string {
    return this.hint ? `${this.message}: ${this.hint}` : this.message;
  }
}

/** Bad arguments or names given by the user. */
export class UsageError extends LazybootError {}
