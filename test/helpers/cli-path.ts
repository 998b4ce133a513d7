// Where the built CLI is, for tests that run `lazyboot` as a user does (one place for the path).
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../../bin/lazyboot.js', import.meta.url));
