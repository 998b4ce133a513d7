# Guest-side helpers, sourced by every hook an image carries: find the lazyboot events port and
# send one JSON line per milestone without ever holding up the boot.
#
# Why a background writer: a write to a virtio-serial port blocks while no host side is connected.
# Each event is written by its own background process that gives up after LAZYBOOT_EVENT_TIMEOUT
# seconds, and waits for the previous writer first so that events arrive in the order emitted.
# Plain POSIX sh: runs under busybox ash (tiny image, initramfs) and dash (Debian userspace).

LAZYBOOT_EVENTS_PORT_NAME=org.lazyboot.events.0
LAZYBOOT_RUN_DIR=${LAZYBOOT_RUN_DIR:-/run/lazyboot}
LAZYBOOT_EVENT_TIMEOUT=${LAZYBOOT_EVENT_TIMEOUT:-120}

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

# True while process $1 runs (a zombie counts as finished: its parent may not have reaped it yet).
lazyboot_alive() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
	read -r _pid _comm state _rest < "/proc/$1/stat" 2>/dev/null || return 1
	[ "$state" != Z ]
}

lazyboot_uptime() {
	read -r seconds _rest < /proc/uptime
	echo "$seconds"
}

# lazyboot_emit EVENT [EXTRA_JSON_FIELDS]
# EXTRA_JSON_FIELDS is a JSON fragment without braces, e.g. '"source":"initramfs"'.
# Uses LAZYBOOT_DISK/DRIVER/ROOT when set. Returns at once; the write happens in the background.
lazyboot_emit() {
	event=$1
	extra=${2:+,$2}
	line="{\"event\":\"$event\",\"disk\":\"${LAZYBOOT_DISK:-}\",\"driver\":\"${LAZYBOOT_DRIVER:-}\",\"root\":\"${LAZYBOOT_ROOT:-}\",\"uptime\":$(lazyboot_uptime)$extra}"
	mkdir -p "$LAZYBOOT_RUN_DIR"
	previous_writer=$(cat "$LAZYBOOT_RUN_DIR/writer.pid" 2>/dev/null)
	(
		deadline=$(( $(date +%s) + LAZYBOOT_EVENT_TIMEOUT ))
		# The port appears when virtio_console has probed; wait for it within the same budget.
		while ! port=$(lazyboot_events_port); do
			[ "$(date +%s)" -lt "$deadline" ] || exit 1
			sleep 0.2
		done
		while lazyboot_alive "$previous_writer"; do
			[ "$(date +%s)" -lt "$deadline" ] || exit 1
			sleep 0.1
		done
		left=$(( deadline - $(date +%s) ))
		[ "$left" -gt 0 ] || exit 1
		timeout "$left" sh -c 'printf "%s\n" "$1" > "$2"' lazyboot-emit "$line" "$port"
	) </dev/null >/dev/null 2>&1 &
	echo $! > "$LAZYBOOT_RUN_DIR/writer.pid"
	echo "lazyboot: $line"
}

# Waits (at most LAZYBOOT_EVENT_TIMEOUT seconds) until the last background writer has finished.
lazyboot_flush_events() {
	writer=$(cat "$LAZYBOOT_RUN_DIR/writer.pid" 2>/dev/null) || return 0
	while lazyboot_alive "$writer"; do
		sleep 0.1
	done
}
