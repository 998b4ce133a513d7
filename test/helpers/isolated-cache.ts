// Loaded by ava before every test file (package.json "ava.require"): the CLI uses the host-wide
// block cache by default for NBD repositories, under $XDG_CACHE_HOME. Each test file gets its own
// empty one, removed when the file's process exits, so no test sees blocks another test (or an
// earlier run, or the user) fetched, and none leaves blocks behind.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const dir = mkdtempSync(path.join(tmpdir(), 'lazyboot-test-xdg-cache-'));
process.env.XDG_CACHE_HOME = dir;
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
