// The POSIX shell scripts lazyboot runs in any guest through guest-exec: one that runs a command
// with its stdout/stderr (and stdin, if asked) on the stream ports, and one that kills a command's
// whole process tree. Plain /bin/sh, no helper installed in the guest: any Linux guest with
// qemu-guest-agent runs them.
import { STDERR_PORT_NAME, STDIN_PORT_NAME, STDOUT_PORT_NAME } from './qemu-args.js';

/** What the wrapper prints on its own (captured) stdout before it runs the command, or instead. */
export type WrapperVerdict = 'started' | 'not-found' | 'not-executable' | 'no-ports';

/**
 * Arguments: END_TOKEN STDIN(0|1) COMMAND ARGS... The port devices are found through sysfs (udev's
 * /dev/virtio-ports/ links need udev). After the command, END_TOKEN is written to both ports: the
 * host knows then that it has every byte (a virtio-serial port has no end-of-stream of its own).
 */
export const RUN_WRAPPER = `
port() {
  for d in /sys/class/virtio-ports/*; do
    read -r name 2>/dev/null < "$d/name" || continue
    [ "$name" = "$1" ] && { echo "/dev/\${d##*/}"; return 0; }
  done
  return 1
}
token=$1; want_stdin=$2; shift 2
: "\${HOME:=/root}"; export HOME
out=$(port ${STDOUT_PORT_NAME}) && err=$(port ${STDERR_PORT_NAME}) || { echo no-ports; exit 125; }
if [ "$want_stdin" = 1 ]; then input=$(port ${STDIN_PORT_NAME}) || { echo no-ports; exit 125; }; else input=/dev/null; fi
case $1 in
  */*) [ -e "$1" ] || { echo not-found; exit 127; }
       [ -x "$1" ] && [ ! -d "$1" ] || { echo not-executable; exit 126; } ;;
  *) command -v -- "$1" >/dev/null 2>&1 || { echo not-found; exit 127; } ;;
esac
exec 3>"$out" 4>"$err" || { echo no-ports; exit 125; }
echo started
"$@" <"$input" >&3 2>&4 3>&- 4>&-
rc=$?
printf '%s' "$token" >&3
printf '%s' "$token" >&4
exit $rc
`;

/**
 * Argument: PID. Kills PID and every descendant (collected first, from /proc/N/stat's ppid, so a
 * child cannot escape by its parent dying first): SIGTERM, then SIGKILL after 2 s. Builtins only
 * in the loop (read, not cat): forks are slow under TCG.
 */
export const KILL_TREE = `
pids=$1; all=
while [ -n "$pids" ]; do
  all="$all $pids"; next=
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null < "$f" || continue
    rest=\${line##*) }; set -- $rest
    pid=\${f#/proc/}; pid=\${pid%/stat}
    for p in $pids; do [ "$2" = "$p" ] && next="$next $pid"; done
  done
  pids=$next
done
kill -TERM $all 2>/dev/null; sleep 2; kill -KILL $all 2>/dev/null
exit 0
`;
