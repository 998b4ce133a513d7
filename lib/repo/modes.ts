// Permissions of everything the repository creates: images belong to their owner (the NBD sockets
// are 0600 too). Modes passed to open/mkdir can only lose bits to the umask, never gain them.
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;
