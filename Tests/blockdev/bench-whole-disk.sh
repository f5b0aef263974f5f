#!/usr/bin/env bash
# Benchmark, not a test (no pass/fail): 4k random reads at QD32 on a whole disk, inside one QEMU/TCG guest
# with an emulated AHCI drive (unthrottled), through AoE against the same disk read locally:
#   fio      fio --filename=/dev/sda --direct=1 --rw=randread --bs=4k --iodepth=32 --ioengine=libaio
#   aoe      aoe-target 1 1 v0 /dev/sda --direct, aoectl bench --rw randread --bs 4k --qd 32 on the veth peer
#   aoe-1t   the same with --io-engine threads --workers 1 (one request at a time at the disk: what the
#            whole-disk bug looked like)
# in the order fio, aoe, aoe-1t, fio, aoe, aoe-1t, and prints one table (IOPS, MB/s, p50/p99 latency, and
# for aoe the target's CPU time per I/O). Under TCG every number is bounded by the emulated CPU, not by a
# disk: the drive is the host's page cache. Compare the rows with each other, not with real hardware.
#
# Environment: AOE_BIN_DIR (default as the tests: .build-passthrough/swift/release if built, else
# .build/debug), AOE_TARGET, AOECTL, BB_DURATION (seconds per run, default 10), TIMEOUT (QEMU, default
# 420 s), KVER, VERBOSE=1, KEEP=1. Exit 0 when every run produced a number, 1 otherwise, 77 skip.
set -u

BB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BB_REPO=$(cd "$BB_DIR/../.." && pwd)
TIMEOUT=${TIMEOUT:-420}
QEMU=${QEMU:-qemu-system-x86_64}
DURATION=${BB_DURATION:-10}
DISK_MB=256
GUEST_BULKY="root base.cpio cfg initrd disk.img"
GUEST_KEPT="serial.log"
# shellcheck source=../lib/guest-harness.sh
. "$BB_DIR/../lib/guest-harness.sh"

[ "$(id -u)" = 0 ] || skip "must run as root (reads /boot/vmlinuz-*, packs kernel modules)"
# shellcheck source=../lib/need.sh
. "$BB_DIR/../lib/need.sh"
# shellcheck source=../lib/guest-image.sh
. "$BB_DIR/../lib/guest-image.sh"
need_tool "$QEMU" cpio busybox jq ldd flock timeout fio pgrep truncate
ldd "$(command -v busybox)" 2>&1 | grep -qE 'not a dynamic executable|statically linked' ||
    skip "busybox is not statically linked (apt-get install busybox-static)"
kver=$(guest_kernel_version)
[ -n "$kver" ] || skip "no /boot/vmlinuz-* with /lib/modules/*/modules.dep"
KERNEL=/boot/vmlinuz-$kver
MODDIR=/lib/modules/$kver
if [ -z "${AOE_BIN_DIR:-}" ]; then
    AOE_BIN_DIR=$BB_REPO/.build-passthrough/swift/release
    [ -x "$AOE_BIN_DIR/aoe-target" ] || AOE_BIN_DIR=$BB_REPO/.build/debug
fi
AOE_TARGET=${AOE_TARGET:-$AOE_BIN_DIR/aoe-target}
AOECTL=${AOECTL:-$AOE_BIN_DIR/aoectl}
for b in "$AOE_TARGET" "$AOECTL"; do
    [ -x "$b" ] || die "$b is not built (cd $BB_REPO && swift build), or set AOE_BIN_DIR"
done
log "binaries: $AOE_TARGET, $AOECTL; kernel $kver; ${DURATION}s per run"

WORK=$(mktemp -d /tmp/blockdev-bench-XXXXXX) || die "mktemp failed"
TAG="@@AOEBB-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')@@"


root=$WORK/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,lib/modules,test}
cp "$(command -v busybox)" "$root/bin/busybox"
for a in $(busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
guest_mod_resolve "$MODDIR" scsi_common scsi_mod libata libahci ahci sd_mod veth >"$WORK/mods" || die "kernel modules missing"
: >"$root/etc/modules"
while read -r m; do cp -n "$MODDIR/$m" "$root/lib/modules/"; basename "$m" >>"$root/etc/modules"; done <"$WORK/mods"
for b in jq fio; do guest_copy_with_libs "$(command -v $b)" /usr/bin/$b "$root"; done
guest_copy_with_libs "$AOE_TARGET" /usr/bin/aoe-target "$root"
guest_copy_with_libs "$AOECTL" /usr/bin/aoectl "$root"
command -v strip >/dev/null && strip -s "$root/usr/bin/aoe-target" "$root/usr/bin/aoectl" 2>/dev/null

cat >"$root/test/bench.sh" <<'GUEST'
#!/bin/sh
. /test/config
T=$BB_TAG
D=$BB_DURATION
say() { echo "$T $*"; }
i=0; while [ ! -b /dev/sda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/sda ] || { say "ERROR no /dev/sda"; exit 1; }
ip link set lo up
ip link add v0 type veth peer name v1
CIF=$(ls /sys/class/net | grep -v -x -e lo -e v0 | head -1)
ip link set v0 up; ip link set "$CIF" up
i=0; while [ "$(cat /sys/class/net/$CIF/operstate)" != up ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
say "INFO /dev/sda $(cat /sys/block/sda/size) sectors, queue_depth $(cat /sys/block/sda/device/queue_depth), peer $CIF"
# fill the disk once, so every read returns data the drive wrote (not a sparse hole in the host file)
dd if=/dev/urandom of=/dev/sda bs=1M count=$BB_DISK_MB oflag=direct 2>/dev/null

run_fio() {
    fio --name=randread --filename=/dev/sda --direct=1 --rw=randread --bs=4k --iodepth=32 --ioengine=libaio \
        --runtime="$D" --time_based --ramp_time=1 --output-format=json >/tmp/fio.json 2>/tmp/fio.err
    jq -r '.jobs[0].read | "\(.iops | floor) \(.bw_bytes / 1000000 * 100 | floor / 100) \(.clat_ns.percentile["50.000000"] / 1000 | floor) \(.clat_ns.percentile["99.000000"] / 1000 | floor)"' \
        /tmp/fio.json >/tmp/fio.res 2>/dev/null
    read -r iops mbps p50 p99 </tmp/fio.res
    say "RESULT fio ${iops:--} ${mbps:--} ${p50:--} ${p99:--} -"
    [ -n "${iops:-}" ] || { say "ERROR fio: $(head -c 300 /tmp/fio.err)"; }
}
run_aoe() {
    local name=$1 pid i=0 t0 t1 ticks
    shift
    aoe-target 1 1 v0 /dev/sda --direct "$@" >/tmp/target-$name.log 2>&1 &
    pid=$!
    while [ $i -lt 30 ] && ! aoectl identify -i "$CIF" 1.1 --timeout 1 >/dev/null 2>&1; do i=$((i + 1)); done
    say "INFO $name: $(grep -m1 'serving ' /tmp/target-$name.log)"
    t0=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
    aoectl bench -i "$CIF" 1.1 --rw randread --bs 4k --qd 32 --duration "$D" --warmup 1 --json >/tmp/bench.json 2>/tmp/bench.err
    t1=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
    kill $pid; wait $pid
    jq -r '"\(.iops | floor) \(.mbps * 100 | floor / 100) \(.latency_us.p50 | floor) \(.latency_us.p99 | floor) \(.ios) \(.retransmits)"' \
        /tmp/bench.json >/tmp/bench.res 2>/dev/null
    read -r iops mbps p50 p99 ios rtx </tmp/bench.res
    # the target's CPU time over the bench (warm-up included), in us per measured I/O (CLK_TCK 100)
    cpu=-
    [ -n "${ios:-}" ] && [ "$ios" -gt 0 ] && cpu=$(( (t1 - t0) * 10000 / ios ))
    say "RESULT $name ${iops:--} ${mbps:--} ${p50:--} ${p99:--} $cpu"
    [ -n "${iops:-}" ] && say "INFO $name: $ios I/Os, $rtx retransmits" || say "ERROR $name: $(head -c 300 /tmp/bench.err)"
}
for round in 1 2; do
    run_fio
    run_aoe aoe
    run_aoe aoe-1t --io-engine threads --workers 1
done
say "DONE"
GUEST
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
. /test/config
for m in $(cat /etc/modules); do insmod /lib/modules/$m || echo "$BB_TAG ERROR insmod $m"; done
sh /test/bench.sh
printf '\052' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
sleep 2
poweroff -f
EOF
chmod 755 "$root/init"
mkdir -p "$WORK/cfg/test"
printf "BB_TAG='%s'\nBB_DURATION=%s\nBB_DISK_MB=%s\n" "$TAG" "$DURATION" "$DISK_MB" >"$WORK/cfg/test/config"
guest_cpio_dir "$root" "$WORK/base.cpio"
guest_cpio_dir "$WORK/cfg" "$WORK/cfg.cpio"
cat "$WORK/base.cpio" "$WORK/cfg.cpio" >"$WORK/initrd"
log "initramfs: $(du -m "$WORK/initrd" | cut -f1) MiB"
truncate -s "${DISK_MB}M" "$WORK/disk.img"

exec 9>/tmp/interop-qemu.lock
flock -w 900 9 || die "QEMU lock /tmp/interop-qemu.lock busy for 900 s"
waited=0
while pgrep -x 'qemu-system-x86_64|qemu-system-i386' >/dev/null 2>&1; do
    [ $waited = 0 ] && log "waiting for another QEMU on this machine to finish"
    waited=$((waited + 5)); [ $waited -ge 900 ] && die "another QEMU kept running for ${waited}s"
    sleep 5
done
serial=$WORK/serial.log
: >"$serial"
start=$SECONDS
timeout -k 5 "$TIMEOUT" "$QEMU" -accel tcg -machine pc -m 1024 -smp 1 \
    -nodefaults -no-user-config -display none -monitor none -no-reboot -nic none \
    -serial "file:$serial" \
    -kernel "$KERNEL" -initrd "$WORK/initrd" -append "console=ttyS0 panic=-1 quiet loglevel=3" \
    -drive "if=none,id=d0,file=$WORK/disk.img,format=raw" \
    -device ahci,id=ahci -device ide-hd,drive=d0,bus=ahci.0 \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 >"$serial.qemu-out" 2>&1 </dev/null &
QEMU_PID=$!
if [ "${VERBOSE:-0}" = 1 ]; then
    tail -n +1 -F --pid="$QEMU_PID" "$serial" 2>/dev/null | sed -u 's/\r//g; s/^/  serial| /' &
else
    tail -n +1 -F --pid="$QEMU_PID" "$serial" 2>/dev/null | sed -u 's/\r//g' | grep --line-buffered -F "$TAG" | sed -u "s/^.*$TAG/  guest|/" &
fi
tpid=$!
wait "$QEMU_PID"; rc=$?
QEMU_PID=""
sleep 0.3; kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null
flock -u 9
log "QEMU exited with $rc after $((SECONDS - start)) s"

tr -d '\r' <"$serial" | grep -F "$TAG" | sed "s/^.*$TAG //" >"$WORK/markers"
grep -q '^DONE$' "$WORK/markers" || { FAILED=1; echo "FAIL: the guest did not finish (see $serial)"; }
grep '^ERROR' "$WORK/markers" && FAILED=1
echo
printf '%-8s %9s %8s %9s %9s %12s\n' run IOPS MB/s p50_us p99_us target_us/IO
awk '$1 == "RESULT" { printf "%-8s %9s %8s %9s %9s %12s\n", $2, $3, $4, $5, $6, $7 }' "$WORK/markers"
awk '$1 == "RESULT" && $3 != "-" { s[$2] += $3; n[$2]++ } END { for (k in s) printf "mean %-8s %.0f IOPS\n", k, s[k] / n[k] }' "$WORK/markers" | sort
[ "$FAILED" = 0 ]
