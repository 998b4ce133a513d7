// The blocks a snapshot is shipping, kept durable in `<disk>.map.sending` while they travel: their
// W bits are moved here before the map clears them, and merged back into the map if the snapshot
// fails, is interrupted or was killed (the next snapshot, or this one's error path, does it). So
// a mark is never lost, and writes made meanwhile set fresh W bits for the next snapshot.
//
// Layout: "LZBSEND1" | u32 JSON length | JSON {target, session, name, blockCount} | bitset | SHA-256.
import { createHash } from 'node:crypto';
import { readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Bitset } from '../map/bitset.js';
import { fsyncDirectory, writeFileDurably } from '../repo/durable-file.js';
import { SendingSetCorrupt } from './errors.js';

const MAGIC = Buffer.from('LZBSEND1', 'latin1');

export interface SendingSet {
  /** The map target label whose W bits these are. */
  readonly target: string;
  /** The write session shipping them (a retry of the same content reuses it). */
  readonly session: string;
  /** The image name being committed. */
  readonly name: string;
  readonly blocks: Bitset;
}

export function sendingSetPath(mapPath: string): string {
  return `${mapPath}.sending`;
}

export async function writeSendingSet(path: string, set: SendingSet): Promise<void> {
  const json = Buffer.from(JSON.stringify({ target: set.target, session: set.session, name: set.name, blockCount: set.blocks.length }), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(json.length);
  const body = Buffer.concat([MAGIC, length, json, Buffer.from(set.blocks.bytes)]);
  await writeFileDurably(path, [body, createHash('sha256').update(body).digest()]);
}

/** The leftover set of an interrupted snapshot, or undefined when there is none. */
export async function readSendingSet(path: string): Promise<SendingSet | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  if (bytes.length < MAGIC.length + 4 + 32 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) throw new SendingSetCorrupt(path, 'is not an in-flight set');
  const body = bytes.subarray(0, bytes.length - 32);
  if (!createHash('sha256').update(body).digest().equals(bytes.subarray(bytes.length - 32))) throw new SendingSetCorrupt(path, 'fails its checksum');
  const jsonLength = body.readUInt32BE(MAGIC.length);
  const jsonEnd = MAGIC.length + 4 + jsonLength;
  const header = JSON.parse(body.subarray(MAGIC.length + 4, jsonEnd).toString('utf8')) as { target: string; session: string; name: string; blockCount: number };
  const bitBytes = body.subarray(jsonEnd);
  if (bitBytes.length !== Bitset.bytesFor(header.blockCount)) throw new SendingSetCorrupt(path, 'has a bitset of the wrong length');
  return { target: header.target, session: header.session, name: header.name, blocks: new Bitset(header.blockCount, new Uint8Array(bitBytes)) };
}

export async function removeSendingSet(path: string): Promise<void> {
  await unlink(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
  await fsyncDirectory(dirname(path));
}
