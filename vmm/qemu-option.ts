// QEMU's key=value option syntax: a doubled comma means a literal one (paths may contain commas).
export function escapeOption(value: string): string {
  return value.replaceAll(',', ',,');
}
