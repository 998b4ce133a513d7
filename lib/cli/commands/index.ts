// Every top-level CLI command module, in help order. Each module owns one command group.
// Modules are loaded on demand: `lazyboot disk serve` is a long-running process whose memory
// counts, and loading every command (the VM launcher, execa, ...) costs it ~7 MiB for nothing.
// Add one line per command group: its name (the first word of `command`) and its loader.
import type { CommandModule } from 'yargs';

export interface CommandLoader {
  readonly name: string;
  load(): Promise<CommandModule<any, any>>;
}

export const commandLoaders: readonly CommandLoader[] = [
  { name: 'image', load: async () => (await import('./image.js')).imageCommand },
  { name: 'repo', load: async () => (await import('./repo.js')).repoCommand },
  { name: 'disk', load: async () => (await import('./disk.js')).diskCommand },
  { name: 'snapshot', load: async () => (await import('./snapshot.js')).snapshotCommand },
  { name: 'replicate', load: async () => (await import('./replicate.js')).replicateCommand },
  { name: 'boot', load: async () => (await import('./boot.js')).bootCommand },
  { name: 'run', load: async () => (await import('./run.js')).runCommand },
  { name: 'ps', load: async () => (await import('./ps.js')).psCommand },
  { name: 'pivot', load: async () => (await import('./vm-control.js')).pivotCommand },
  { name: 'stop', load: async () => (await import('./vm-control.js')).stopCommand },
  { name: 'cache', load: async () => (await import('./cache.js')).cacheCommand },
];
