#!/bin/sh
# Inside the GPIO VM (chroot on the host root, cwd = repository): run the
# GPIO test stage with pytest; results (junit XML, per-test logs) go to
# $EB_RUN_DIR. Extra arguments go to pytest (e.g. -k smoke).
set -u
: "${EB_RUN_DIR:?run me through tests/gpio/run-vm.sh}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
cd "$(dirname "$0")/../.." || exit 126
echo "== guest: $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
/usr/bin/python3 -m pytest -p no:cacheprovider -q -rA --basetemp=/tmp/pytest \
	--junitxml="$EB_RUN_DIR/junit.xml" -o junit_family=xunit2 \
	-o testpaths=tests/gpio "$@"
rc=$?
# keep what the tests left behind (daemon output, broker logs) for the host
cp -r /tmp/pytest "$EB_RUN_DIR/pytest-tmp" 2>/dev/null
exit $rc
