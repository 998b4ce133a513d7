// Host side of the tiny image's requests (served on the events port when it stays up, see
// guest/tiny/init): ask the guest to write a file to its disk, or to power off.
import { randomUUID } from 'node:crypto';
import { GuestEventRejected } from './errors.js';
import type { GuestEvent, GuestEvents } from './events.js';

export interface TinyWriteResult {
  /** Path on the guest's root filesystem, e.g. /data/NAME. */
  readonly file: string;
  readonly kib: number;
  /** SHA-256 of the file as the guest wrote it. */
  readonly sha256: string;
}

export interface TinyRequestOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

async function request(events: GuestEvents, line: (id: string) => string, answer: string, options: TinyRequestOptions): Promise<GuestEvent> {
  const id = randomUUID();
  const reply = events.waitForMatch(
    `${answer} for request ${id}`,
    (event) => event.request === id && (event.event === answer || event.event === 'rejected'),
    options,
  );
  await events.send(line(id));
  const event = await reply;
  if (event.event === 'rejected') throw new GuestEventRejected(line(id), String(event.reason));
  return event;
}

/** Makes the tiny guest write `kib` KiB of random data to /data/`name` on its disk and sync. */
export async function tinyWriteFile(events: GuestEvents, name: string, kib: number, options: TinyRequestOptions): Promise<TinyWriteResult> {
  const event = await request(events, (id) => `write ${id} ${name} ${kib}`, 'wrote', options);
  return { file: String(event.file), kib: Number(event.kib), sha256: String(event.sha256) };
}

/** Makes the tiny guest power off (it answers first; QEMU then exits). */
export async function tinyPowerOff(events: GuestEvents, options: TinyRequestOptions): Promise<void> {
  await request(events, (id) => `poweroff ${id}`, 'powering-off', options);
}
