// Dev tool: boots an image lazily to agent-ready and writes the guest's disk requests in order
// (JSON lines: t ms, op, offset, length) for replaying fetch policies offline. Not a benchmark.
// Usage: node dist/scripts/trace-boot-reads.js IMAGE_FILE OUT.jsonl
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { CorBackend } from '../lib/cor/cor-backend.js';
import { launch } from '../lib/launch.js';

const [imageFile, out] = process.argv.slice(2);
if (!imageFile || !out) throw new Error('usage: trace-boot-reads IMAGE_FILE OUT.jsonl');
const scratch = await mkdtemp(path.join(tmpdir(), 'lazyboot-trace-'));
const lines: string[] = [];
const started = Date.now();
const proto = CorBackend.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
for (const [method, op] of [['readOrLend', 'read'], ['write', 'write'], ['writeZeroes', 'zero'], ['trim', 'trim']] as const) {
  const original = proto[method]!;
  proto[method] = function (this: unknown, offset: unknown, second: unknown, ...rest: unknown[]) {
    const length = Buffer.isBuffer(second) ? second.length : second;
    lines.push(JSON.stringify({ t: Date.now() - started, op, offset, length }));
    return original.call(this, offset, second, ...rest);
  };
}
try {
  const repo = path.join(scratch, 'repo');
  await execa('node', [path.join(import.meta.dirname, '..', '..', 'bin', 'lazyboot.js'), 'image', 'import', imageFile, 'img', '--repo', repo, '--format', 'raw']);
  const vm = await launch({ image: 'img', from: [repo], agent: true, memoryMiB: 512, timeoutMs: 300_000 });
  try {
    await vm.ready;
    lines.push(JSON.stringify({ t: Date.now() - started, op: 'ready', stats: vm.stats() }));
  } finally {
    await vm.close();
  }
  await writeFile(out, lines.join('\n') + '\n');
  console.log(`${lines.length} requests written to ${out}`);
} finally {
  await rm(scratch, { recursive: true, force: true });
}
