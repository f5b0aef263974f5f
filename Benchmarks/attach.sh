#!/usr/bin/env bash
# aoectl attach against the Linux aoe driver, on the same target, in a QEMU guest (TCG: absolute numbers are
# the emulator's, the ratio is what to read). Builds release binaries, then runs Tests/attach/test-attach.sh
# with BENCH=1 and prints fio's IOPS and MiB/s for each, with the ratio attach / aoe.ko.
#   sudo Benchmarks/attach.sh
set -u
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: sudo $0"; exit 1; }
log=$(mktemp /tmp/attach-build-XXXXXX)
swift build -c release >"$log" 2>&1 || { tail -20 "$log"; echo "swift build -c release failed"; exit 1; }
rm -f "$log"
out=$(mktemp /tmp/attach-bench-XXXXXX)
BENCH=1 TIMEOUT=900 AOE_BIN_DIR=.build/release bash Tests/attach/test-attach.sh >"$out" 2>&1
rc=$?
grep -o 'INFO bench .*' "$out" | sed 's/^INFO bench //'
awk '/INFO bench / { sub(/.*INFO bench /, ""); split($1, n, "-"); w = substr($1, length(n[1]) + 2); iops[n[1], w] = $4 + 0; ws[w] = 1 }
     END { for (w in ws) if (iops["aoe.ko", w] > 0) printf "ratio attach/aoe.ko %-22s %.2f\n", w, iops["attach", w] / iops["aoe.ko", w] }' "$out"
[ $rc = 0 ] || { echo "the guest run failed (exit $rc), see $out"; exit 1; }
rm -f "$out"
