// Chooses the accelerator: `--accel auto|kvm|tcg`. Auto believes only a real probe, never the mere
// existence of /dev/kvm (nested, software-emulated KVMs expose it and then fail guests).
// The answer is cached per process: the probe runs at most once.
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { dir } from 'tmp-promise';
import { KvmUnavailable } from './errors.js';
import { launchQemu } from './launcher.js';
import type { Accelerator, AccelRequest } from './vm-options.js';

export interface AccelChoice {
  readonly accel: Accelerator;
  /** One line saying why, for the user. */
  readonly reason: string;
}

const cache = new Map<string, Promise<AccelChoice>>();

export function chooseAccelerator(request: AccelRequest, options: { qemuBinary?: string; probeTimeoutMs?: number } = {}): Promise<AccelChoice> {
  const key = `${request}:${options.qemuBinary ?? ''}`;
  let choice = cache.get(key);
  if (!choice) {
    choice = decide(request, options);
    cache.set(key, choice);
    choice.catch(() => cache.delete(key)); // a failed explicit `kvm` is not remembered
  }
  return choice;
}

async function decide(request: AccelRequest, options: { qemuBinary?: string; probeTimeoutMs?: number }): Promise<AccelChoice> {
  if (request === 'tcg') return { accel: 'tcg', reason: 'TCG as requested (--accel tcg)' };
  const kvmDevice = await canOpenKvm();
  if (request === 'kvm') {
    if (!kvmDevice.ok) throw new KvmUnavailable(kvmDevice.reason);
    const probe = await probeKvm(options);
    if (!probe.ok) throw new KvmUnavailable(probe.reason);
    return { accel: 'kvm', reason: 'KVM as requested (--accel kvm); probe boot passed' };
  }
  const flags = await cpuVirtualisationFlags();
  if (!flags.ok) return { accel: 'tcg', reason: `TCG: ${flags.reason}` };
  if (!kvmDevice.ok) return { accel: 'tcg', reason: `TCG: ${kvmDevice.reason}` };
  const probe = await probeKvm(options);
  return probe.ok ? { accel: 'kvm', reason: 'KVM: probe boot passed' } : { accel: 'tcg', reason: `TCG: KVM probe failed (${probe.reason})` };
}

type Verdict = { ok: true } | { ok: false; reason: string };

async function cpuVirtualisationFlags(): Promise<Verdict> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  // Without vmx/svm the kernel's KVM is emulated (nested in software): it exists but guests fail.
  return /^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo) ? { ok: true } : { ok: false, reason: 'the CPU shows no vmx/svm flag, so KVM cannot run guests natively' };
}

async function canOpenKvm(): Promise<Verdict> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: `/dev/kvm is not usable (${(error as NodeJS.ErrnoException).code})` };
  }
}

/**
 * Boots SeaBIOS under KVM with no disk and waits for it to give up on booting (its debug port
 * says so): proves KVM runs real-mode firmware to the end. Reports failure on a KVM internal
 * error, a QEMU abort, or no progress within the timeout.
 */
export async function probeKvm(options: { qemuBinary?: string; probeTimeoutMs?: number } = {}): Promise<Verdict> {
  const timeoutMs = options.probeTimeoutMs ?? 5000;
  const runDir = await dir({ unsafeCleanup: true, prefix: 'lazyboot-kvm-probe-' });
  const firmwareLog = path.join(runDir.path, 'firmware.log');
  try {
    const qemu = await launchQemu({
      runDir: runDir.path,
      qemuBinary: options.qemuBinary,
      accel: 'kvm',
      machine: 'pc',
      memoryMiB: 64,
      qmpTimeoutMs: timeoutMs,
      qemuArgs: ['-chardev', `file,id=probe-debugcon,path=${firmwareLog}`, '-device', 'isa-debugcon,iobase=0x402,chardev=probe-debugcon', '-no-reboot'],
    });
    try {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (qemu.process.hasExited) return { ok: false, reason: qemu.process.stderrTail().trim().split('\n').pop() || 'QEMU exited' };
        const status = await qemu.qmp.execute<{ status: string }>('query-status');
        if (status.status === 'internal-error') return { ok: false, reason: 'KVM internal error in the firmware' };
        const log = await readFile(firmwareLog, 'utf8').catch(() => '');
        if (/No bootable device|Boot failed/.test(log)) return { ok: true };
        await sleep(50);
      }
      return { ok: false, reason: `the firmware made no progress in ${timeoutMs} ms` };
    } finally {
      await qemu.process.stop(qemu.qmp, 1000);
      await qemu.qmp.close();
    }
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  } finally {
    await runDir.cleanup();
  }
}
