// The accelerator choice: explicit TCG, and auto deciding from the CPU flags and a real probe.
// Outcomes, not wall-clock windows (they flake on a loaded machine): which path decided shows in
// the reason, and a hang shows as the test's own timeout.
import { readFileSync } from 'node:fs';
import test from 'ava';
import { chooseAccelerator } from '../vmm/accel.js';

const cpuHasVirtualisation = /^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));

test('--accel tcg is taken as asked', async (t) => {
  t.deepEqual(await chooseAccelerator('tcg'), { accel: 'tcg', reason: 'TCG as requested (--accel tcg)' });
});

test('--accel auto falls back to TCG, with the reason, when the CPU has no vmx/svm (this machine)', async (t) => {
  if (cpuHasVirtualisation) return t.pass('this CPU has vmx/svm: auto decides by the probe boot instead');
  const choice = await chooseAccelerator('auto');
  t.is(choice.accel, 'tcg');
  // This reason comes only from the CPU-flag check, which decides before any probe boot is started.
  t.regex(choice.reason, /no vmx\/svm/);
  t.is(await chooseAccelerator('auto'), choice, 'cached for the process');
});

test('the KVM probe boot gives a verdict (never hangs) and leaves no QEMU behind', async (t) => {
  // The probe bounds itself (3 s here, plus QEMU's start and stop); this timeout only turns a hang
  // into a failure, it does not time the probe.
  t.timeout(60_000);
  const { probeKvm } = await import('../vmm/accel.js');
  const verdict = await probeKvm({ probeTimeoutMs: 3000 });
  t.log(JSON.stringify(verdict));
  if (!verdict.ok) t.regex(verdict.reason, /\S/, 'a failed probe says why');
  const { readdir, readFile } = await import('node:fs/promises');
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    t.false(cmdline.includes('lazyboot-kvm-probe-'), `probe QEMU ${entry} still running`);
  }
});
