// QEMU's key=value option syntax: a doubled comma means a literal one (paths may contain commas).
// In lib/base/ because both vmm/ (the machine's arguments) and guest/ (the channels' arguments) write options.
export function escapeOption(value: string): string {
  return value.replaceAll(',', ',,');
}
