#!/bin/sh
# One-time set-up of the GPIO test VM (idempotent; reruns skip what is done).
#
#   tests/gpio/prepare.sh [CACHE_ROOT]      (default: build/gpio-vm)
#
# Produces, under CACHE_ROOT/<kernel version>/:
#   vmlinuz          the Debian kernel the guest boots (a copy)
#   gpio-sim-eb.ko   gpio-sim + irq_sim, one module built out of tree from
#                    linux-source (the Debian kernel has neither)
#   initrd.img       busybox-static + modules + tests/gpio/guest-init as /init
#   ready            written last: everything above is complete
# and CACHE_ROOT/current -> <kernel version>.
#
# Exit codes: 0 ready; 77 cannot be prepared here (the reason is printed on
# the last line as "GPIO-PREPARE-UNAVAILABLE: <reason>"); anything else is a
# bug in this script or a broken build, and must be treated as a failure.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE_ROOT=${1:-$REPO/build/gpio-vm}
PKGS="qemu-system-x86 linux-image-amd64 linux-headers-amd64 busybox-static gpiod make gcc xz-utils cpio"

unavailable() {
	echo "GPIO-PREPARE-UNAVAILABLE: $*" >&2
	exit 77
}
log() { echo "gpio-prepare: $*" >&2; }

installed() {
	dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -q '^installed$'
}

# -- packages ----------------------------------------------------------------
missing=""
for p in $PKGS; do installed "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
	[ "$(id -u)" -eq 0 ] ||
		unavailable "packages missing:$missing (not root; run: apt-get install$missing)"
	log "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	if ! { apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null 2>&1 &&
		  apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; }; }; then
		unavailable "apt-get install$missing failed (no network or no archive?)"
	fi
fi

# -- the kernel: the newest Debian image with matching headers -----------------
KVER=""
for img in $(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sort -V -r); do
	v=${img#/boot/vmlinuz-}
	if [ -d "/lib/modules/$v/kernel" ] && [ -f "/usr/src/linux-headers-$v/Makefile" ]; then
		KVER=$v
		break
	fi
done
[ -n "$KVER" ] || unavailable "no /boot/vmlinuz-*-amd64 with modules and headers"
[ -r "/boot/vmlinuz-$KVER" ] || unavailable "/boot/vmlinuz-$KVER is not readable"

DIR=$CACHE_ROOT/$KVER
mkdir -p "$DIR"
ln -sfn "$KVER" "$CACHE_ROOT/current"

# The initramfs depends on guest-init: rebuild it (cheap) when that changed.
stamp=$(cat "$HERE/guest-init" "$0" | md5sum | cut -d' ' -f1)
if [ -f "$DIR/ready" ] && [ "$(cat "$DIR/ready")" = "$stamp" ]; then
	exit 0
fi

# The source package that matches the image, e.g. linux-image-6.1.0-56-amd64
# 6.1.192-2 -> linux-source-6.1 6.1.192-2.
IMGVER=$(dpkg-query -W -f='${Version}' "linux-image-$KVER" 2>/dev/null) ||
	unavailable "linux-image-$KVER is not a Debian package"
SERIES=$(echo "$KVER" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
SRCPKG=linux-source-$SERIES

# -- gpio-sim.c, irq_sim.c, gpiolib.h from the source package ------------------
SRC=$DIR/src
if [ ! -f "$SRC/.extracted" ]; then
	rm -rf "$SRC" && mkdir -p "$SRC/dl"
	deb=$(ls "$DIR"/${SRCPKG}_*.deb 2>/dev/null | head -n1 || true)
	if [ -z "$deb" ]; then
		log "apt-get download $SRCPKG=$IMGVER (~140 MB)"
		( cd "$SRC/dl" && apt-get download "$SRCPKG=$IMGVER" >/dev/null 2>&1 ) ||
			unavailable "apt-get download $SRCPKG=$IMGVER failed (no network, or the archive no longer has that version)"
		chmod 0644 "$SRC"/dl/*.deb
		mv "$SRC"/dl/*.deb "$DIR/"
		deb=$(ls "$DIR"/${SRCPKG}_*.deb | head -n1)
	fi
	log "extracting gpio-sim.c, irq_sim.c, gpiolib.h from $(basename "$deb")"
	dpkg-deb --fsys-tarfile "$deb" |
		tar -xO "./usr/src/$SRCPKG.tar.xz" |
		tar -xJ -C "$SRC" --strip-components=1 \
			"$SRCPKG/drivers/gpio/gpio-sim.c" \
			"$SRCPKG/drivers/gpio/gpiolib.h" \
			"$SRCPKG/kernel/irq/irq_sim.c"
	# irq_to_desc() is not exported to modules.
	grep -q 'handle_simple_irq(irq_to_desc(irqnum))' "$SRC/kernel/irq/irq_sim.c" ||
		{ echo "gpio-prepare: irq_sim.c has changed; update the patch" >&2; exit 1; }
	sed -i 's/handle_simple_irq(irq_to_desc(irqnum))/generic_handle_irq(irqnum)/' \
		"$SRC/kernel/irq/irq_sim.c"
	rm -f "$DIR"/${SRCPKG}_*.deb
	touch "$SRC/.extracted"
fi

# -- out-of-tree modules --------------------------------------------------------
MOD=$DIR/mod
if [ ! -f "$DIR/gpio-sim-eb.ko" ]; then
	rm -rf "$MOD" && mkdir -p "$MOD"
	cp "$SRC/drivers/gpio/gpio-sim.c" "$SRC/drivers/gpio/gpiolib.h" \
		"$SRC/kernel/irq/irq_sim.c" "$MOD/"
	printf 'obj-m := gpio-sim-eb.o\ngpio-sim-eb-y := gpio-sim.o irq_sim.o\n' >"$MOD/Kbuild"
	log "building gpio-sim-eb.ko against linux-headers-$KVER"
	make -s -C "/usr/src/linux-headers-$KVER" M="$MOD" modules >"$MOD/build.log" 2>&1 ||
		{ cat "$MOD/build.log" >&2; echo "gpio-prepare: module build failed" >&2; exit 1; }
	cp "$MOD/gpio-sim-eb.ko" "$DIR/"
fi

# -- initramfs ------------------------------------------------------------------
log "building the initramfs"
RD=$DIR/initrd.d
rm -rf "$RD"
mkdir -p "$RD/bin" "$RD/modules" "$RD/proc" "$RD/sys" "$RD/dev" "$RD/host" "$RD/out" "$RD/tmp"
cp /bin/busybox "$RD/bin/busybox"
for a in sh mount umount mkdir insmod ip cat echo sleep chroot ls dd printf poweroff \
	 grep sed tr head tail cut ln mknod hexdump; do
	ln -s busybox "$RD/bin/$a"
done
# Modules in load order (dependencies first, from modules.dep).
MODDIR=/lib/modules/$KVER
order=""
add_mod() { # path relative to MODDIR
	case " $order " in *" $1 "*) return ;; esac
	deps=$(grep "^$1:" "$MODDIR/modules.dep" | cut -d: -f2)
	# modules.dep lists the deepest dependency last
	for d in $(echo "$deps" | tr ' ' '\n' | tac); do add_mod "$d"; done
	order="$order $1"
}
for m in configfs virtio_pci 9pnet_virtio 9p virtio_rng; do
	re=$(echo "$m" | sed "s/[-_]/[-_]/g")
	path=$(grep -E "/$re\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | cut -d: -f1 | head -n1)
	[ -n "$path" ] || unavailable "module $m not found for $KVER"
	add_mod "$path"
done
: >"$RD/modules/order"
for p in $order; do
	cp "$MODDIR/$p" "$RD/modules/"
	basename "$p" >>"$RD/modules/order"
done
cp "$DIR/gpio-sim-eb.ko" "$RD/modules/"
echo gpio-sim-eb.ko >>"$RD/modules/order"
cp "$HERE/guest-init" "$RD/init"
chmod 0755 "$RD/init"
( cd "$RD" && find . | cpio -o -H newc --quiet | gzip -1 ) >"$DIR/initrd.img.tmp"
mv "$DIR/initrd.img.tmp" "$DIR/initrd.img"
cp "/boot/vmlinuz-$KVER" "$DIR/vmlinuz"
echo "$stamp" >"$DIR/ready"
log "ready: $DIR"
