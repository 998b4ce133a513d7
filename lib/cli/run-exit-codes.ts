// The exit codes of `lazyboot run`, fixed and documented (README, "Using lazyboot in CI"): the
// command's own code passes through; lazyboot's own outcomes follow `timeout` (124) and
// `docker run` (125, 126, 127), conventions CI users already script against.
export const RUN_EXIT = {
  /** --timeout ran out: the command was killed in the guest. */
  timedOut: 124,
  /** lazyboot itself failed: bad arguments, image, repository, QEMU, the guest agent, a copy. */
  lazybootFailed: 125,
  /** The command exists in the guest but could not be started (not executable, guest-exec refused). */
  cannotStart: 126,
  /** The command was not found in the guest. */
  notFound: 127,
} as const;
