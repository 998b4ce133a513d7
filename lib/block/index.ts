// 'lazyboot/block': the block path's shared face — the BlockBackend interface every layer speaks,
// its optional extras, the block map of a copy-on-read disk, and the manifest format and codec.
export * from './backend.js';
export * from './read-into.js';
export { BlockMap, type MapHeader, type MapCounts } from '../map/block-map.js';
export * from '../repo/manifest-format.js';
export { encodeManifest, decodeManifest } from '../repo/manifest-codec.js';
export { InvalidManifest } from '../repo/errors.js';
