// Waits in the guest (through guest-exec) until cloud-init has finished with the seed lazyboot
// attached, so the command sees what user-data did. POSIX shell, nothing installed in the guest.
// Prints one line: `status: done|error|disabled|...` (cloud-init's own word), or `no-cloud-init`.
export const WAIT_FOR_CLOUD_INIT = `
command -v cloud-init >/dev/null 2>&1 || { echo no-cloud-init; exit 0; }
cloud-init status --wait >/dev/null 2>&1
cloud-init status 2>/dev/null | grep '^status:' | head -n 1
`;
