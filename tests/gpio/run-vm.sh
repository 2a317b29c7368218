#!/bin/sh
# Boot the GPIO test VM once, run one command in the host root (chroot, read
# only, with tmpfs on /tmp /run /var/tmp /root and a read-write run
# directory), stream the guest console here, and return the command's exit code.
#
#   tests/gpio/run-vm.sh [-t SECONDS] [-m MEM] [-c CPUS] [-d RUNDIR] [-l LOG] -- CMD [ARG...]
#
# CMD runs under /bin/sh in the guest with the repository as working
# directory; $EB_RUN_DIR is the run directory (writable, also on the host:
# results go there). Needs tests/gpio/prepare.sh first.
#
# Exit codes: CMD's own (0..127; higher values are reported as 127);
# 124 the VM ran out of time; 125 the VM ended without reporting an exit
# code (panic, crash, guest-init failure to reach isa-debug-exit);
# 120..123 guest-init failures (module load, 9p mount, gpio-sim, no command).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${GPIO_VM_CACHE:-$REPO/build/gpio-vm}/current
TIMEOUT=${GPIO_VM_TIMEOUT:-900}
MEM=${GPIO_VM_MEM:-2G}
CPUS=${GPIO_VM_CPUS:-2}
RUNDIR=""
LOG=""
while getopts t:m:c:d:l: o; do
	case $o in
	t) TIMEOUT=$OPTARG ;;
	m) MEM=$OPTARG ;;
	c) CPUS=$OPTARG ;;
	d) RUNDIR=$OPTARG ;;
	l) LOG=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [-t s] [-m mem] [-c cpus] [-d rundir] [-l log] -- CMD..." >&2; exit 2; }
[ -f "$CACHE/ready" ] || { echo "run-vm: $CACHE is not prepared (run tests/gpio/prepare.sh)" >&2; exit 125; }

if [ -z "$RUNDIR" ]; then
	RUNDIR=$REPO/build/gpio-vm/runs/$(date +%Y%m%d-%H%M%S)-$$
fi
mkdir -p "$RUNDIR"
RUNDIR=$(cd "$RUNDIR" && pwd)
rm -f "$RUNDIR/rc" "$RUNDIR/qemu.rc"
LOG=${LOG:-$RUNDIR/console.log}

# The command script, quoted for sh.
{
	echo "# written by run-vm.sh"
	echo "export EB_RUN_DIR='$RUNDIR'"
	echo "cd '$REPO' || exit 126"
	printf 'exec'
	for a in "$@"; do
		printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"
	done
	echo
} >"$RUNDIR/cmd.sh"

# TCG by default (KVM cannot run guests on the CI machines); GPIO_VM_KVM=1 tries KVM.
accel=tcg,thread=multi
[ "${GPIO_VM_KVM:-0}" = 1 ] && accel=kvm

echo "run-vm: booting $(readlink "$CACHE") ($accel, $CPUS cpus, $MEM), limit ${TIMEOUT}s, run dir $RUNDIR" >&2
start=$(date +%s)
{
	qrc=0
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
		-M pc -accel "$accel" -cpu max -smp "$CPUS" -m "$MEM" \
		-nographic -no-reboot -nodefaults -serial stdio -net none \
		-kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
		-append "console=ttyS0 panic=-1 quiet loglevel=4 eb.out=$RUNDIR eb.cmd=$RUNDIR/cmd.sh eb.repo=$REPO" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		-virtfs "local,path=$RUNDIR,mount_tag=out,security_model=none" \
		-device virtio-rng-pci \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		</dev/null || qrc=$?
	echo "$qrc" >"$RUNDIR/qemu.rc"
} 2>&1 | tr -d '\r' | sed -u 's/\x1b[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' | tee "$LOG"
took=$(($(date +%s) - start))

qrc=$(cat "$RUNDIR/qemu.rc" 2>/dev/null || echo 255)
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	echo "run-vm: the VM ran out of time (${TIMEOUT}s)" >&2
	exit 124
fi
# Both must agree: the rc file the guest wrote into the run directory and
# qemu's exit status from isa-debug-exit ((rc << 1) | 1). qemu failing by
# itself exits 1, which alone would read as "rc 0": never trust one of them.
rc=$(cat "$RUNDIR/rc" 2>/dev/null || true)
case $rc in
'' | *[!0-9]*)
	echo "run-vm: the VM ended without an exit code (qemu exit $qrc; see $LOG)" >&2
	exit 125 ;;
esac
[ "$rc" -gt 127 ] && rc=127
if [ "$qrc" != $(((rc << 1) | 1)) ]; then
	echo "run-vm: guest said exit $rc but qemu exited $qrc (see $LOG)" >&2
	exit 125
fi
echo "run-vm: guest command exit $rc after ${took}s" >&2
exit "$rc"
