// `lazyboot ps`: the running VMs of this user, asked over their control sockets (lib/control/):
// name, state, who said storage-ready, pivot and fill, bytes fetched. `--json`: one array.
import type { Argv, CommandModule } from 'yargs';
import { callVm, runningVmNames } from '../../control/client.js';
import type { VmStatusReport } from '../../control/vm-commands.js';
import { humanSize } from '../human-size.js';

/** How long one VM gets to answer `status` (a loaded machine); a VM that does not is listed as such. */
const STATUS_TIMEOUT_MS = 10_000;

function fillColumn(status: VmStatusReport): string {
  if (!status.fill || status.fill === 'none') return '-';
  if (status.fill === 'complete') return 'complete';
  const share = status.fillLen ? ` ${Math.floor((100 * (status.fillOffset ?? 0)) / status.fillLen)}%` : '';
  return `${status.fill}${share}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd()).join('\n');
}

export const psCommand: CommandModule<any, { json: boolean }> = {
  command: 'ps',
  describe: 'list the running VMs (started by `lazyboot boot`) with state, readiness, pivot, fill and bytes fetched',
  builder: (y: Argv) => y.option('json', { type: 'boolean', default: false, describe: 'print one JSON array of the VMs\' status' }) as Argv<any>,
  handler: async (args) => {
    const reports: Array<VmStatusReport | { name: string; state: 'not answering'; error: string }> = [];
    for (const name of await runningVmNames()) {
      try {
        reports.push(await callVm<VmStatusReport>(name, 'status', {}, { timeoutMs: STATUS_TIMEOUT_MS }));
      } catch (error) {
        reports.push({ name, state: 'not answering', error: (error as Error).message });
      }
    }
    if (args.json) return void process.stdout.write(`${JSON.stringify(reports)}\n`);
    if (reports.length === 0) return void process.stdout.write('no running VMs\n');
    const rows = [['NAME', 'STATE', 'STORAGE-READY', 'PIVOT', 'FILL', 'FETCHED', 'PRESENT', 'IMAGE', 'PID']];
    for (const report of reports) {
      if (!('protocol' in report)) {
        rows.push([report.name, report.state, '-', '-', '-', '-', '-', '-', '-']);
        continue;
      }
      const present = report.totalBlocks ? `${report.presentBlocks}/${report.totalBlocks}` : '-';
      rows.push([report.name, report.state, report.storageReady ?? '-', report.pivot ?? '-', fillColumn(report), report.fetchedBytes === undefined ? '-' : humanSize(report.fetchedBytes), present, report.image, String(report.pid)]);
    }
    process.stdout.write(`${table(rows)}\n`);
  },
};
