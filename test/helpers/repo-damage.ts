// Ways to damage a repository on purpose, for the tests that show damage stays local.
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** Flips one bit of `file` at `offset`, as a failing disk would. */
export async function flipBit(file: string, offset: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    byte[0] = byte[0]! ^ 0x10;
    await handle.write(byte, 0, 1, offset);
  } finally {
    await handle.close();
  }
}

/** The repository's files in packs/ ending with `suffix`, sorted (oldest pack first by name). */
export async function packsEndingWith(repo: string, suffix: string): Promise<string[]> {
  return (await readdir(join(repo, 'packs'))).filter((name) => name.endsWith(suffix)).sort().map((name) => join(repo, 'packs', name));
}
