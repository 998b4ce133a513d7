// Copies files into and out of the guest through qemu-guest-agent's file calls
// (guest-file-open/read/write/close): any guest with the agent, no network or shared directory.
// Chunks of 1 MiB (base64 on the wire); a SHA-256 of the bytes copied comes back for checking.
import { createHash } from 'node:crypto';
import { open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { GuestAgent } from './agent-client.js';
import { AgentCommandFailed } from './errors.js';
import { CopyFailed } from './errors.js';

const CHUNK_BYTES = 1024 * 1024;

export interface CopyResult {
  readonly bytes: number;
  readonly sha256: string;
}

const agentHint = (error: unknown) =>
  error instanceof AgentCommandFailed && /disabled|not found|has been disabled/i.test(error.description)
    ? "the guest agent has its file calls disabled: allow guest-file-* in qemu-ga's configuration"
    : 'check the path in the guest (its directory must exist) and that the guest agent runs as a user who may write it';

const agentReason = (error: unknown) => (error instanceof AgentCommandFailed ? error.description : (error as Error).message);

/** Copies host file `hostPath` to `guestPath` (created or truncated; parent directory must exist). Keeps the executable bits. */
export async function copyToGuest(agent: GuestAgent, hostPath: string, guestPath: string): Promise<CopyResult> {
  const from = hostPath;
  const to = `guest:${guestPath}`;
  const info = await stat(hostPath).catch((error: NodeJS.ErrnoException) => {
    throw new CopyFailed(from, to, error.code === 'ENOENT' ? 'no such file on the host' : error.message, 'give an existing host file');
  });
  if (!info.isFile()) throw new CopyFailed(from, to, 'not a regular file', 'copy single files (pack a directory with tar first)');
  const source = await open(hostPath, 'r');
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    let handle: number;
    try {
      handle = await agent.fileOpen(guestPath, 'w');
    } catch (error) {
      throw new CopyFailed(from, to, agentReason(error), agentHint(error));
    }
    try {
      const buffer = Buffer.alloc(CHUNK_BYTES);
      for (;;) {
        const { bytesRead } = await source.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        const chunk = buffer.subarray(0, bytesRead);
        hash.update(chunk);
        await agent.fileWrite(handle, chunk);
        bytes += bytesRead;
      }
    } catch (error) {
      throw new CopyFailed(from, to, agentReason(error), agentHint(error));
    } finally {
      await agent.fileClose(handle).catch(() => undefined);
    }
  } finally {
    await source.close();
  }
  if (info.mode & 0o111) {
    const mode = (info.mode & 0o7777).toString(8);
    const chmod = await agent.exec('chmod', [mode, guestPath]);
    if (chmod.exitCode !== 0) throw new CopyFailed(from, to, `chmod ${mode} failed: ${chmod.stderr.toString().trim()}`, 'check the guest path');
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** Copies guest file `guestPath` to `hostPath`, through a temp file beside it renamed at the end (never a half file). */
export async function copyFromGuest(agent: GuestAgent, guestPath: string, hostPath: string): Promise<CopyResult> {
  const from = `guest:${guestPath}`;
  const to = hostPath;
  let handle: number;
  try {
    handle = await agent.fileOpen(guestPath, 'r');
  } catch (error) {
    throw new CopyFailed(from, to, agentReason(error), agentHint(error));
  }
  const temp = path.join(path.dirname(hostPath), `.${path.basename(hostPath)}.lazyboot-${process.pid}.tmp`);
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    const target = await open(temp, 'w').catch((error: NodeJS.ErrnoException) => {
      throw new CopyFailed(from, to, error.message, 'check that the host directory exists and is writable');
    });
    try {
      for (;;) {
        let piece: { data: Buffer; eof: boolean };
        try {
          piece = await agent.fileRead(handle, CHUNK_BYTES);
        } catch (error) {
          throw new CopyFailed(from, to, agentReason(error), agentHint(error));
        }
        if (piece.data.length > 0) {
          hash.update(piece.data);
          await target.write(piece.data);
          bytes += piece.data.length;
        }
        if (piece.eof || piece.data.length === 0) break;
      }
    } finally {
      await target.close();
    }
    await rename(temp, hostPath);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  } finally {
    await agent.fileClose(handle).catch(() => undefined);
  }
  return { bytes, sha256: hash.digest('hex') };
}
