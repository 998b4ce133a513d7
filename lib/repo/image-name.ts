// Image names and references (`name`, `name@N`): the one place that says what is allowed.
import { InvalidImageName } from './errors.js';

export const MAX_IMAGE_NAME_LENGTH = 128;

/**
 * Letters, digits and a few punctuation marks; never `/`, `:`, `@` or whitespace. The first
 * character is a letter or digit: a leading `-` would be taken for an option on the command line
 * (and a leading `.` hides the directory).
 */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

export interface ImageRef {
  readonly name: string;
  /** Undefined means "the latest version". */
  readonly version?: number;
}

/** Throws InvalidImageName unless `name` is safe as a file name and as an NBD export name. */
export function validateImageName(name: string): string {
  if (name.length === 0) throw new InvalidImageName(name, 'empty');
  if (name.length > MAX_IMAGE_NAME_LENGTH) throw new InvalidImageName(name, `longer than ${MAX_IMAGE_NAME_LENGTH} characters`);
  if (name.includes('/')) throw new InvalidImageName(name, 'contains "/"');
  if (name.includes('..')) throw new InvalidImageName(name, 'contains ".."');
  if (name.includes(':')) throw new InvalidImageName(name, 'contains ":"');
  if (name.includes('@')) throw new InvalidImageName(name, 'contains "@", which separates the version');
  if (!/^[A-Za-z0-9]/.test(name)) throw new InvalidImageName(name, 'does not start with a letter or digit');
  if (!NAME_PATTERN.test(name)) throw new InvalidImageName(name, 'contains a character other than letters, digits, ".", "_", "-", "+"');
  return name;
}

export function isValidImageName(name: string): boolean {
  try {
    validateImageName(name);
    return true;
  } catch {
    return false;
  }
}

/** Parses `name` or `name@N` (N counts from 1). */
export function parseImageRef(ref: string): ImageRef {
  const at = ref.lastIndexOf('@');
  if (at < 0) return { name: validateImageName(ref) };
  const name = validateImageName(ref.slice(0, at));
  const versionText = ref.slice(at + 1);
  if (!/^[1-9][0-9]{0,8}$/.test(versionText)) throw new InvalidImageName(ref, 'the version after "@" must be a number from 1');
  return { name, version: Number(versionText) };
}

export function formatImageRef(name: string, version: number): string {
  return `${name}@${version}`;
}
