// Per-target settings applied through the agent on images without cloud-init: POSIX shell run by
// guest-exec (nothing installed in the guest). Each prints one line saying what it did.

/** Argument: NAME. Sets the running hostname, /etc/hostname, and the 127.0.1.1 line of /etc/hosts (Debian's convention). */
export const SET_HOSTNAME = `
name=$1
if command -v hostname >/dev/null 2>&1; then hostname "$name"; else echo "$name" > /proc/sys/kernel/hostname; fi || exit 1
echo "$name" > /etc/hostname || exit 1
if grep -q '^127\\.0\\.1\\.1[[:space:]]' /etc/hosts 2>/dev/null; then
  sed -i "s/^127\\.0\\.1\\.1[[:space:]].*/127.0.1.1\\t$name/" /etc/hosts
else
  printf '127.0.1.1\\t%s\\n' "$name" >> /etc/hosts
fi
echo "hostname $name"
`;

/**
 * Arguments: USER KEY. Adds KEY to USER's ~/.ssh/authorized_keys (once, without options), with the modes sshd
 * insists on (700 and 600) and USER as owner. Fails if the user does not exist.
 */
export const AUTHORIZE_SSH_KEY = `
user=$1; key=$2
entry=$(grep "^$user:" /etc/passwd) || { echo "no-user $user"; exit 1; }
home=$(echo "$entry" | cut -d: -f6)
[ -n "$home" ] && [ -d "$home" ] || { echo "no-home $home"; exit 1; }
mkdir -p "$home/.ssh" && chmod 700 "$home/.ssh" || exit 1
touch "$home/.ssh/authorized_keys" && chmod 600 "$home/.ssh/authorized_keys" || exit 1
file=$home/.ssh/authorized_keys
# A line holding the key with options before it (cloud-init's disable_root "login as debian" stub)
# would win over ours in sshd: replaced by the plain key.
if ! grep -qxF "$key" "$file"; then
  others=$(grep -vF "$key" "$file")
  { [ -n "$others" ] && printf '%s\n' "$others"; echo "$key"; } > "$file" || exit 1
fi
chown -R "$user:" "$home/.ssh" 2>/dev/null || chown -R "$user" "$home/.ssh"
echo "authorized $home/.ssh/authorized_keys"
`;
