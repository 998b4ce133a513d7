// Test helper run as its own process: a program that embeds launch() and owns its Ctrl-C, as a test
// runner or CI harness would. It boots the tiny image (kept up) from the repository URI in argv[2],
// prints `up <QEMU pid>` once the guest runs, and on SIGINT prints `embedder: SIGINT`, closes the
// VM itself and prints `embedder: closed <state>`. It never calls process.exit: the process ends
// when nothing is left open, which is part of what the test checks.
import { launch, type LazyVm } from '../../lib/launch.js';
import { tinyStayUpArgs } from '../../guest/qemu-args.js';

let vm: LazyVm | undefined;
process.on('SIGINT', () => {
  process.stdout.write('embedder: SIGINT\n');
  void vm?.close().then(() => process.stdout.write(`embedder: closed ${vm?.state}\n`));
});

vm = await launch({ image: 'tiny', from: [process.argv[2]!], accel: 'tcg', memoryMiB: 256, qemuArgs: tinyStayUpArgs(), timeoutMs: 90_000 });
await vm.ready;
const up = vm.events.history.find((event) => event.type === 'qemu-up');
process.stdout.write(`up ${up?.type === 'qemu-up' ? up.pid : ''}\n`);
