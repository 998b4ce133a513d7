// Mounts a host directory shared over virtiofs (vmm/virtiofs-share.ts) in the guest, through
// guest-exec: POSIX shell, nothing installed in the guest. The kernel's virtiofs may be a module
// (Debian's cloud kernel: virtiofs.ko). Arguments: TAG GUEST_DIR RO(0|1).
// Prints `mounted virtiofs`, or `no-virtiofs FILESYSTEMS` (what the kernel has, for the error line)
// and exits 2 when the kernel has no virtiofs; other failures print mount's error and exit 1.
export const MOUNT_SHARE = `
tag=$1; dir=$2; ro=$3
has() { grep -qw "$1" /proc/filesystems; }
has virtiofs || modprobe virtiofs >/dev/null 2>&1 || true
if ! has virtiofs; then
  echo "no-virtiofs $(has 9p && echo 9p)"
  exit 2
fi
mkdir -p "$dir" || exit 1
if [ "$ro" = 1 ]; then options=ro,nosuid,nodev; else options=nosuid,nodev; fi
mount -t virtiofs -o "$options" "$tag" "$dir" 2>&1 || exit 1
echo "mounted virtiofs"
`;
