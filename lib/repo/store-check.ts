// `lazyboot repo check` of a repository in an object store (s3://), through the storage interface:
// every index against its pack, every manifest against the indexes (the same checks as a
// directory's walk, repository-check.ts), stray keys, and what an interrupted import leaves: a pack
// without an index, a pack and index no manifest refers to, an unfinished multipart upload. No
// process id tells whether their writer is gone (it may run on another host), so their age does:
// younger than `minAgeMs` they are kept and only noted — an import may still be writing them.
import { decodePackIndex } from './pack-index.js';
import { checkIndexWith, checkManifest, damagedEntries, INDEX_NAME, MANIFEST_NAME, PACK_NAME, type BlockRefs, type CheckResult, type Finding } from './repository-check.js';
import { isValidImageName } from './image-name.js';
import { MARKER } from './repository-marker.js';
import type { RepositoryStorage, StoredEntry } from './storage/storage.js';

export interface StoreCheckOptions {
  readonly repair?: boolean;
  readonly verify?: boolean;
  /** Unreferenced objects younger than this are kept (a concurrent import may be writing them). */
  readonly minAgeMs: number;
}

/** A pack (and its index) no manifest refers to, and when it was last written. */
interface PackObjects {
  readonly pack?: StoredEntry;
  readonly index?: StoredEntry;
}

const minutes = (ms: number): string => `${Math.round(ms / 60_000)} min`;

export async function checkRepositoryStore(storage: RepositoryStorage, options: StoreCheckOptions): Promise<CheckResult> {
  const now = Date.now();
  const findings: Finding[] = [];
  const at = (key: string) => storage.describe(key);
  const stray = (key: string, where: string): void => void findings.push({ file: at(key), problem: `does not belong in ${where}; move it out of the repository` });

  for (const entry of await storage.list('')) {
    if (entry.kind === 'directory' ? !['packs', 'manifests', 'objects'].includes(entry.name) : entry.name !== MARKER) stray(entry.name, 'a repository');
  }

  // Packs and indexes: each index checked against its pack (its intact blocks become `stored`).
  const packs = new Map<string, PackObjects>();
  const refs: BlockRefs = { stored: new Set(), manifestsMissingBlocks: 0, referenced: new Set() };
  const blocksOf = new Map<string, string[]>();
  for (const entry of await storage.list('packs')) {
    const isPack = entry.kind === 'file' && PACK_NAME.test(entry.name);
    const isIndex = entry.kind === 'file' && INDEX_NAME.test(entry.name);
    if (!isPack && !isIndex) {
      stray(`packs/${entry.name}${entry.kind === 'directory' ? '/' : ''}`, 'packs/');
      continue;
    }
    const base = entry.name.replace(/\.(pack|idx)$/, '');
    packs.set(base, { ...packs.get(base), [isPack ? 'pack' : 'index']: entry });
  }
  let indexed = 0;
  for (const [base, { pack, index }] of packs) {
    if (!index) continue;
    indexed++;
    const key = `packs/${base}.pack`;
    const bytes = storage.get(`packs/${base}.idx`);
    bytes.catch(() => {}); // seen by the index check
    const problem = await checkIndexWith({
      index: async () => (await bytes) ?? Promise.reject(Object.assign(new Error('removed meanwhile'), { code: 'ENOENT' })),
      packSize: async () => pack?.size,
      damaged: async (entries) => {
        const reader = storage.openRange(key);
        try {
          return await damagedEntries(entries, (target, position) => reader.readInto(target, 0, target.length, position));
        } finally {
          await reader.close();
        }
      },
    }, `${base}.idx`, refs.stored, options.verify ?? false);
    if (problem) findings.push({ file: at(`packs/${base}.idx`), problem });
    // The blocks this index lists (whether intact or not), to find the packs no manifest uses.
    const listed = await bytes.then((data) => (data ? decodePackIndex(data) : []), () => []);
    blocksOf.set(base, typeof listed === 'string' ? [] : listed.map((e) => e.digest.toString('latin1')));
  }

  // Manifests: each decodes, names itself, and finds its blocks in the indexes.
  let images = 0;
  for (const entry of await storage.list('manifests')) {
    if (entry.kind !== 'directory') {
      stray(`manifests/${entry.name}`, 'manifests/');
      continue;
    }
    if (!isValidImageName(entry.name)) {
      findings.push({ file: at(`manifests/${entry.name}/`), problem: 'is not a valid image name (letters, digits, ".", "_", "-", "+", starting with a letter or digit); move it out of the repository' });
      continue;
    }
    let versions = 0;
    for (const file of await storage.list(`manifests/${entry.name}`)) {
      const version = file.kind === 'file' ? MANIFEST_NAME.exec(file.name) : null;
      if (!version) {
        stray(`manifests/${entry.name}/${file.name}`, `manifests/${entry.name}/`);
        continue;
      }
      versions++;
      const key = `manifests/${entry.name}/${file.name}`;
      const problem = await checkManifest(async () => (await storage.get(key)) ?? Buffer.alloc(0), entry.name, Number(version[1]), refs);
      if (problem) findings.push({ file: at(key), problem });
    }
    if (versions > 0) images++;
  }

  // What interrupted imports leave. A manifest that does not decode may refer to any block, and
  // one that misses blocks may find them in a pack whose index is lost: then nothing is removed.
  const unsure = (refs.undecodable ?? 0) + refs.manifestsMissingBlocks;
  const leftover = (keys: string[], what: string, written: Date | undefined, indexWritten: Date | undefined, remove: () => Promise<void>): void => {
    const age = written ? now - written.getTime() : Infinity;
    const file = at(keys[0]!);
    const also = keys.length > 1 ? ` (and ${keys.slice(1).map(at).join(', ')})` : '';
    if (unsure > 0) {
      findings.push({ file, problem: `${what}${also}; kept, because ${unsure} manifest(s) are damaged or miss blocks and may need it (restore them, or re-import those images and run --repair again)` });
    } else if (age < options.minAgeMs) {
      findings.push({ file, young: true, problem: `${what}${also}, written ${Math.max(0, Math.round(age / 1000))} s ago; kept: an import may still be writing it (--repair removes it once it is ${minutes(options.minAgeMs)} old, see --min-age)` });
    } else {
      findings.push({ file, problem: `${what}${also}, left by an interrupted import; nothing refers to it`, repair: remove, ...(indexWritten ? { indexWritten } : {}) });
    }
  };
  for (const [base, { pack, index }] of packs) {
    if (!index) {
      leftover([`packs/${base}.pack`], 'pack without an index', pack!.modified, undefined, () => storage.delete(`packs/${base}.pack`));
      continue;
    }
    if (!pack || (blocksOf.get(base) ?? []).some((digest) => refs.referenced!.has(digest))) continue;
    // The index goes first: a reader that lists it then never finds its pack gone.
    leftover([`packs/${base}.idx`, `packs/${base}.pack`], 'pack and index no manifest refers to', laterOf(pack.modified, index.modified), index.modified, async () => {
      await storage.delete(`packs/${base}.idx`);
      await storage.delete(`packs/${base}.pack`);
    });
  }
  for (const upload of (await storage.unfinishedUploads?.()) ?? []) {
    leftover([upload.key], `unfinished multipart upload begun ${upload.started.toISOString()}`, upload.started, undefined, () => upload.abort());
  }

  if (options.repair) {
    // A writer that reuses an unreferenced pack's blocks rewrites its index first (PackStore.keepAlive):
    // an index written again since the walk listed it is in use now, and kept.
    const rewritten = new Set<string>();
    if (findings.some((finding) => finding.repair && finding.indexWritten)) {
      const now = new Map((await storage.list('packs')).map((entry) => [at(`packs/${entry.name}`), entry.modified?.getTime()]));
      for (const finding of findings) {
        if (finding.indexWritten && now.get(finding.file) !== finding.indexWritten.getTime()) rewritten.add(finding.file);
      }
    }
    findings.forEach((finding, index) => {
      if (!rewritten.has(finding.file) || !finding.repair) return;
      findings[index] = { file: finding.file, young: true, problem: `${finding.problem.replace(/, left by an interrupted import; nothing refers to it$/, '')}; kept: a writer has just reused its blocks` };
    });
    for (const finding of findings) {
      if (!finding.repair) continue;
      // A failure (the store refused) leaves it reported; deleting what is gone already succeeds.
      await finding.repair().then(() => (finding.repaired = true), () => undefined);
    }
  }
  return { findings, images, packs: indexed };
}

function laterOf(a: Date | undefined, b: Date | undefined): Date | undefined {
  if (!a || !b) return a ?? b;
  return a > b ? a : b;
}
