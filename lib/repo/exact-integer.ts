// Byte offsets and sizes in messages, as exact decimal integers. Offsets can come from a client or
// a file as u64: a Number past 2^53 is printed through BigInt (the exact value it holds), never as
// "18446744073709552000" or "1.8446744073709552e+19".
export function exactInteger(value: number | bigint): string {
  if (typeof value === 'bigint') return value.toString();
  return Number.isInteger(value) ? BigInt(value).toString() : String(value);
}
