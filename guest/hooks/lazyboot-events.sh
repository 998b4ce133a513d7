# Guest-side helpers, sourced by every hook an image carries: find the lazyboot events port and
# send one JSON line per milestone to the host.
#
# A write to a virtio-serial port blocks while no host side is connected, so every write is
# bounded by `timeout`. Events are queued in $LAZYBOOT_RUN_DIR/pending and sent in order; what
# could not be sent stays queued for the next flush (e.g. the initramfs gives up after a
# couple of seconds and the boot-complete unit sends it later, with a longer budget).
# Nothing runs in the background: a process left behind by the initramfs loses its binaries
# when run-init empties the initramfs. Plain POSIX sh: busybox ash and dash.

LAZYBOOT_EVENTS_PORT_NAME=org.lazyboot.events.0
LAZYBOOT_RUN_DIR=${LAZYBOOT_RUN_DIR:-/run/lazyboot}

# Prints the /dev node of the events port (/dev/vportNpM; udev may not be running).
lazyboot_events_port() {
	for name_file in /sys/class/virtio-ports/*/name; do
		[ -r "$name_file" ] || continue
		if [ "$(cat "$name_file")" = "$LAZYBOOT_EVENTS_PORT_NAME" ]; then
			port_dir=${name_file%/name}
			echo "/dev/${port_dir##*/}"
			return 0
		fi
	done
	return 1
}

# Sets LAZYBOOT_ROOT, LAZYBOOT_DISK and LAZYBOOT_DRIVER from a mounted root block device
# (e.g. /dev/vda2 → /dev/vda, virtio_blk), read from sysfs so it names what really bound the disk.
lazyboot_block_facts() {
	LAZYBOOT_ROOT=$(readlink -f "$1")
	LAZYBOOT_DISK=$LAZYBOOT_ROOT
	LAZYBOOT_DRIVER=unknown
	root_name=${LAZYBOOT_ROOT##*/}
	sys_dev=$(readlink -f "/sys/class/block/$root_name" 2>/dev/null) || return 0
	disk_name=$root_name
	if [ -e "$sys_dev/partition" ]; then
		disk_dir=${sys_dev%/*}
		disk_name=${disk_dir##*/}
	fi
	LAZYBOOT_DISK=/dev/$disk_name
	driver=$(readlink -f "/sys/block/$disk_name/device/driver" 2>/dev/null) || return 0
	LAZYBOOT_DRIVER=${driver##*/}
}

lazyboot_uptime() {
	read -r seconds _rest < /proc/uptime
	echo "$seconds"
}

lazyboot_log() {
	echo "$*" >> "$LAZYBOOT_RUN_DIR/events.log"
}

# lazyboot_emit EVENT [EXTRA_JSON_FIELDS]: queues one event line (sent by lazyboot_flush_events).
# EXTRA_JSON_FIELDS is a JSON fragment without braces, e.g. '"source":"initramfs"'.
# Uses LAZYBOOT_DISK/DRIVER/ROOT when set.
lazyboot_emit() {
	extra=${2:+,$2}
	line="{\"event\":\"$1\",\"disk\":\"${LAZYBOOT_DISK:-}\",\"driver\":\"${LAZYBOOT_DRIVER:-}\",\"root\":\"${LAZYBOOT_ROOT:-}\",\"uptime\":$(lazyboot_uptime)$extra}"
	mkdir -p "$LAZYBOOT_RUN_DIR"
	echo "$line" >> "$LAZYBOOT_RUN_DIR/pending"
	echo "lazyboot: $line"
}

# lazyboot_send_line SECONDS LINE: one bounded write, to $port or, when the caller holds the port
# open (a port has one opener at a time), to its descriptor $LAZYBOOT_EVENTS_FD.
lazyboot_send_line() {
	if [ -n "${LAZYBOOT_EVENTS_FD:-}" ]; then
		timeout "$1" sh -c 'printf "%s\n" "$1" >&"$2"' lazyboot-event "$2" "$LAZYBOOT_EVENTS_FD"
	else
		timeout "$1" sh -c 'printf "%s\n" "$1" > "$2"' lazyboot-event "$2" "$port"
	fi
}

# lazyboot_flush_events SECONDS: sends the queued lines in order, waiting at most SECONDS for the
# host per line. Returns 0 when the queue is empty; otherwise the unsent lines stay queued.
lazyboot_flush_events() {
	budget=$1
	pending=$LAZYBOOT_RUN_DIR/pending
	[ -s "$pending" ] || return 0
	waited=0
	until [ -n "${LAZYBOOT_EVENTS_FD:-}" ] || port=$(lazyboot_events_port); do
		# The port appears once virtio_console has probed the device.
		[ "$waited" -lt 20 ] || { lazyboot_log "no $LAZYBOOT_EVENTS_PORT_NAME port"; return 1; }
		waited=$((waited + 1))
		sleep 0.1
	done
	unsent=""
	while IFS= read -r line; do
		if [ -z "$unsent" ] && lazyboot_send_line "$budget" "$line"; then
			lazyboot_log "sent $line"
		else
			unsent="$unsent$line
"
		fi
	done < "$pending"
	printf '%s' "$unsent" > "$pending"
	[ -z "$unsent" ] && return 0
	message="host not listening after ${budget}s, kept $(grep -c . "$pending") line(s) queued"
	lazyboot_log "$message"
	echo "lazyboot: $message"
	return 1
}
