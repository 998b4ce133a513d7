// The NBD wire format, written once: every header and payload the server, the client, the refusal
// path and the tests' raw peer put on or take off the wire is encoded and decoded by these files
// (pure functions of bytes, no sockets), and named for log lines. Import from here.
export * from './wire-handshake.js';
export * from './wire-transmission.js';
export * from './wire-names.js';
