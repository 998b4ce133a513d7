// Brings up the user-mode network in a guest that does not configure it itself (no DHCP client,
// as in minimal images): the first NIC without an IPv4 address gets slirp's fixed address, the
// default route and, if the guest has none, slirp's DNS. A guest that already has an address is
// left alone. Plain /bin/sh with `ip` (iproute2) or busybox's.
// Arguments: ADDRESS/PREFIX GATEWAY DNS. Prints `configured IFACE`, `already ADDRESS`, or `no-ip-tool`.
export const NETWORK_SETUP = `
if command -v ip >/dev/null 2>&1; then ip() { command ip "$@"; }
elif command -v busybox >/dev/null 2>&1; then ip() { busybox ip "$@"; }
else echo no-ip-tool; exit 1; fi
have=$(ip -4 -o addr show scope global 2>/dev/null | head -n 1)
[ -n "$have" ] && { echo "already $have"; exit 0; }
for dev in /sys/class/net/*; do
  name=\${dev##*/}
  [ "$name" = lo ] && continue
  [ -e "$dev/device" ] || continue
  ip link set dev "$name" up && ip addr add "$1" dev "$name" && ip route add default via "$2" dev "$name" || exit 1
  grep -q '^nameserver' /etc/resolv.conf 2>/dev/null || echo "nameserver $3" >> /etc/resolv.conf
  echo "configured $name"
  exit 0
done
echo no-nic; exit 1
`;
