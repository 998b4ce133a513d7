// The parts' import rule, checked on the source: vmm/ and guest/ reach into lib/ only for the
// shared base (lib/base/: the error root, the teardown registry), and lib/base imports nothing of
// the project, so no two top-level parts import each other (lib/launch.ts composes vmm/ and lib/cor
// from above). A grep of import specifiers is enough: every import here is a relative literal.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { repositoryRoot } from '../fixtures/build.js';

const ROOT = repositoryRoot();

/** Every relative import/export specifier of every .ts file under `dir`, resolved to a repo path. */
function importsUnder(dir: string): { from: string; to: string }[] {
  const found: { from: string; to: string }[] = [];
  const walk = (relative: string) => {
    for (const name of readdirSync(path.join(ROOT, relative))) {
      const child = path.join(relative, name);
      if (statSync(path.join(ROOT, child)).isDirectory()) walk(child);
      else if (child.endsWith('.ts')) {
        const source = readFileSync(path.join(ROOT, child), 'utf8');
        for (const match of source.matchAll(/(?:import|export)[^;]*?from\s+'(\.[^']+)'|import\(\s*'(\.[^']+)'\s*\)/g)) {
          found.push({ from: child, to: path.normalize(path.join(path.dirname(child), match[1] ?? match[2]!)) });
        }
      }
    }
  };
  walk(dir);
  return found;
}

const outside = (imports: { from: string; to: string }[], allowed: (to: string) => boolean) =>
  imports.filter(({ to }) => !allowed(to)).map(({ from, to }) => `${from} -> ${to}`);

test('vmm/ imports only itself, guest/ and lib/base/', (t) => {
  const imports = importsUnder('vmm');
  t.true(imports.length > 0, 'the scan found imports');
  t.deepEqual(outside(imports, (to) => /^(vmm|guest|lib\/base)\//.test(to)), []);
});

test('guest/ imports only itself and lib/base/ (never vmm/ or the rest of lib/)', (t) => {
  t.deepEqual(outside(importsUnder('guest'), (to) => /^(guest|lib\/base)\//.test(to)), []);
});

test('lib/base/ imports nothing of the project', (t) => {
  t.deepEqual(outside(importsUnder('lib/base'), (to) => to.startsWith('lib/base/')), []);
});
