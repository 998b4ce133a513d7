// The accelerator choice: explicit TCG, and auto deciding from the CPU flags and a real probe.
import { readFileSync } from 'node:fs';
import test from 'ava';
import { chooseAccelerator } from '../vmm/accel.js';

const cpuHasVirtualisation = /^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));

test('--accel tcg is taken as asked', async (t) => {
  t.deepEqual(await chooseAccelerator('tcg'), { accel: 'tcg', reason: 'TCG as requested (--accel tcg)' });
});

test('--accel auto falls back to TCG, with the reason, when the CPU has no vmx/svm (this machine)', async (t) => {
  if (cpuHasVirtualisation) return t.pass('this CPU has vmx/svm: auto decides by the probe boot instead');
  const started = Date.now();
  const choice = await chooseAccelerator('auto');
  t.is(choice.accel, 'tcg');
  t.regex(choice.reason, /no vmx\/svm/);
  t.true(Date.now() - started < 500, 'decided without a probe boot');
  t.is(await chooseAccelerator('auto'), choice, 'cached for the process');
});

test('the KVM probe boot gives a verdict within its timeout and leaves no QEMU behind', async (t) => {
  const { probeKvm } = await import('../vmm/accel.js');
  const started = Date.now();
  const verdict = await probeKvm({ probeTimeoutMs: 3000 });
  t.log(JSON.stringify(verdict));
  t.true(Date.now() - started < 8000);
  if (!verdict.ok) t.regex(verdict.reason, /\S/);
  const { readdir, readFile } = await import('node:fs/promises');
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    t.false(cmdline.includes('lazyboot-kvm-probe-'), `probe QEMU ${entry} still running`);
  }
});
