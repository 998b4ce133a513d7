// The 64-bit offsets and sizes of the NBD wire format as JavaScript numbers (exact below 2^53,
// far beyond any export), written as two 32-bit halves so that the hot path needs no BigInt.

export function writeOffset(out: Buffer, offset: number, at: number): void {
  out.writeUInt32BE(Math.floor(offset / 2 ** 32), at);
  out.writeUInt32BE(offset >>> 0, at + 4);
}

export function readOffset(bytes: Buffer, at: number): number {
  return bytes.readUInt32BE(at) * 2 ** 32 + bytes.readUInt32BE(at + 4);
}
