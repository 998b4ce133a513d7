// How the CLI's commands print and group: a table of columns, a list of `key: value` fields, and a
// command with subcommands (image, image trace, repo, disk, cache), so each reads the same way.
import type { Argv, CommandModule } from 'yargs';

/** Rows of cells (the first row the headings) in columns two spaces apart, on stdout. */
export function printTable(rows: readonly (readonly string[])[]): void {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  for (const row of rows) process.stdout.write(row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd() + '\n');
}

/** `key: value` lines with the values lined up one space after the longest key, on stdout. */
export function printFields(fields: readonly (readonly [string, string])[]): void {
  const width = Math.max(...fields.map(([key]) => key.length)) + 2;
  for (const [key, value] of fields) process.stdout.write(`${`${key}:`.padEnd(width)}${value}\n`);
}

export interface CommandGroup {
  /** The group's name, as typed: `image`, `trace`, … */
  readonly name: string;
  readonly describe: string;
  readonly subcommands: readonly CommandModule<any, any>[];
  /** Options every subcommand takes. */
  readonly options?: (y: Argv) => Argv<any>;
}

/** `NAME <command>`: its subcommands, one of which must be named (the error lists them). */
export function commandGroup(group: CommandGroup): CommandModule<any, any> {
  const names = group.subcommands.map((command) => String(command.command).split(' ')[0]!);
  const list = names.length > 1 ? `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}` : names.join('');
  const article = /^[aeiou]/.test(group.name) ? 'an' : 'a';
  return {
    command: `${group.name} <command>`,
    describe: group.describe,
    builder: (y: Argv) => {
      let parser = group.options ? group.options(y) : y;
      for (const command of group.subcommands) parser = parser.command(command);
      return parser.demandCommand(1, `Name ${article} ${group.name} command: ${list}.`);
    },
    handler: () => {},
  };
}
