// Names of NBD commands, options and command flags for log lines and error messages
// ("NBD_CMD_BLOCK_STATUS failed", not "request type 7").
import * as P from './protocol.js';

const COMMAND_NAMES: Record<number, string> = {
  [P.CMD_READ]: 'NBD_CMD_READ',
  [P.CMD_WRITE]: 'NBD_CMD_WRITE',
  [P.CMD_DISC]: 'NBD_CMD_DISC',
  [P.CMD_FLUSH]: 'NBD_CMD_FLUSH',
  [P.CMD_TRIM]: 'NBD_CMD_TRIM',
  [P.CMD_CACHE]: 'NBD_CMD_CACHE',
  [P.CMD_WRITE_ZEROES]: 'NBD_CMD_WRITE_ZEROES',
  [P.CMD_BLOCK_STATUS]: 'NBD_CMD_BLOCK_STATUS',
};

/** `NBD_CMD_READ`, …; a number the spec does not name as `command 99`. */
export function commandName(type: number): string {
  return COMMAND_NAMES[type] ?? `command ${type}`;
}

const OPTION_NAMES: Record<number, string> = {
  [P.OPT_EXPORT_NAME]: 'NBD_OPT_EXPORT_NAME',
  [P.OPT_ABORT]: 'NBD_OPT_ABORT',
  [P.OPT_LIST]: 'NBD_OPT_LIST',
  [P.OPT_STARTTLS]: 'NBD_OPT_STARTTLS',
  [P.OPT_INFO]: 'NBD_OPT_INFO',
  [P.OPT_GO]: 'NBD_OPT_GO',
  [P.OPT_STRUCTURED_REPLY]: 'NBD_OPT_STRUCTURED_REPLY',
  [P.OPT_LIST_META_CONTEXT]: 'NBD_OPT_LIST_META_CONTEXT',
  [P.OPT_SET_META_CONTEXT]: 'NBD_OPT_SET_META_CONTEXT',
};

/** `NBD_OPT_GO`, …; a number the spec does not name as `option 99`. */
export function optionName(option: number): string {
  return OPTION_NAMES[option] ?? `option ${option}`;
}

const FLAG_NAMES: Array<[number, string]> = [
  [P.CMD_FLAG_FUA, 'FUA'],
  [P.CMD_FLAG_NO_HOLE, 'NO_HOLE'],
  [P.CMD_FLAG_DF, 'DF'],
  [P.CMD_FLAG_REQ_ONE, 'REQ_ONE'],
  [P.CMD_FLAG_FAST_ZERO, 'FAST_ZERO'],
];

/** Command flags as `FUA|NO_HOLE`; bits the spec does not define as hex. */
export function commandFlagNames(flags: number): string {
  const names: string[] = [];
  let rest = flags;
  for (const [bit, name] of FLAG_NAMES) {
    if (flags & bit) names.push(name);
    rest &= ~bit;
  }
  if (rest) names.push(`0x${rest.toString(16)}`);
  return names.join('|') || 'none';
}
