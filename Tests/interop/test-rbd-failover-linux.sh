#!/usr/bin/env bash
# The Linux kernel AoE initiator (aoe.ko in a QEMU/TCG guest) across an RBD failover: two aoe-target processes
# serve one RBD image with --failover on one bridge (a one-node Ceph cluster in the namespace); the guest runs
# fio randwrite with crc32c verification, and the host kills -9 the active target while fio writes. The
# standby takes over and announces itself; aoe.ko moves its frames there and fio ends with 0 errors. On the
# host, the image read back through librbd (rbd export) passes fio --verify_only with the guest's job, and
# fails on a region the guest did not write (negative control). The failover time is printed as the guest
# sees it (the old host's last reply, the new host's first: the takeover plus the Linux initiator's wait of
# about 10 s, HARD_SCORN_SECS, before it moves frames to another target).
# env: AOE_TARGET (default .build/debug/aoe-target), TIMEOUT (QEMU, default 400 s), VERBOSE, KEEP.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/rerun-on-nic-stall.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../rbd/ceph-cluster.sh"

TIMEOUT=${TIMEOUT:-400}
SHELF=0 SLOT=1
IMG_MIB=64
# Paced, so that the kill lands in the middle of the writes: 4096 writes at 400 a second take about 10 s.
FIO_ARGS="--rw=randwrite --bs=4k --size=16M --rate_iops=400 --randrepeat=1 --verify=crc32c --verify_fatal=1"
SEED=4242 OFFSET=8M
CONTROL_OFFSET=32M   # a region the guest never writes: the data check must fail there
KILL_AFTER=3   # seconds after fio starts

it_need_root
need_tool ip timeout flock cpio od dd truncate ldd realpath busybox fio tcpdump ceph-mon ceph-osd ceph-mgr monmaptool ceph rbd "$IT_QEMU"
[ -e /dev/net/tun ] || it_skip "no /dev/net/tun"
it_pick_kernel
TARGET_BIN=${AOE_TARGET:-$IT_REPO/.build/debug/aoe-target}
[ -x "$TARGET_BIN" ] || it_die "$TARGET_BIN is not built (swift build)"
it_workdir rbdfo
NONCE=$(it_nonce)
TAG="@@AOEITRBD-$NONCE@@"

EXTRA=$IT_WORK/extra
mkdir -p "$EXTRA/test"
cp "$IT_DIR/guest-rbd-failover.sh" "$EXTRA/test/run.sh"
cp "$IT_DIR/guest-report.sh" "$EXTRA/test/report.sh"
chmod 755 "$EXTRA/test/run.sh"
cat >"$EXTRA/test/env" <<EOV
TAG='$TAG'
SHELF=$SHELF
SLOT=$SLOT
FIO_ARGS='$FIO_ARGS'
SEED=$SEED
OFFSET=$OFFSET
EOV
it_initramfs_base
it_cpio_dir "$EXTRA" "$IT_WORK/extra.cpio"
cat "$IT_INITRAMFS_BASE" "$IT_WORK/extra.cpio" >"$IT_WORK/initrd"

it_net_setup 1500
# The second host's port on the same bridge.
it_ns ip link add vtgt2 type veth peer name vtgt2-br || it_die "veth creation failed"
it_ns ip link set vtgt2-br master br0
for d in vtgt2 vtgt2-br; do it_ns ip link set "$d" up; done
ceph_start "$IT_WORK/ceph" "$IT_NS" || it_skip "the one-node Ceph cluster did not start (see above)"
it_on_exit ceph_stop
ceph_image_create img "${IMG_MIB}M" || it_die "rbd create failed"
MAC_A=$(it_ns cat /sys/class/net/$IT_TGT_IF/address) MAC_B=$(it_ns cat /sys/class/net/vtgt2/address)

ip netns exec "$IT_NS" "$TARGET_BIN" --failover $SHELF $SLOT "$IT_TGT_IF" rbd:rbd/img >"$IT_WORK/a.log" 2>&1 </dev/null &
PID_A=$!
it_on_exit "it_kill_pid $PID_A"
for _ in $(seq 100); do grep -q "serving" "$IT_WORK/a.log" && break; sleep 0.1; done
ip netns exec "$IT_NS" "$TARGET_BIN" --failover $SHELF $SLOT vtgt2 rbd:rbd/img >"$IT_WORK/b.log" 2>&1 </dev/null &
PID_B=$!
it_on_exit "it_kill_pid $PID_B"
for _ in $(seq 100); do grep -q "standing by" "$IT_WORK/b.log" && break; sleep 0.1; done
grep -q "serving" "$IT_WORK/a.log" && grep -q "standing by" "$IT_WORK/b.log" && it_pass "host A serves the image, host B stands by" ||
    { sed 's/^/  a| /' "$IT_WORK/a.log"; sed 's/^/  b| /' "$IT_WORK/b.log"; it_die "the two targets did not start as active and standby"; }

ip netns exec "$IT_NS" tcpdump -i "$IT_TAP" -w "$IT_WORK/guest.pcap" -s 96 -U "ether proto 0x88a2" 2>/dev/null &
CAPTURE=$!
it_on_exit "it_kill_pid $CAPTURE"

SERIAL=$IT_WORK/serial.log
# Kills the active host once the guest's fio has run for KILL_AFTER seconds.
(
    for _ in $(seq $((TIMEOUT * 10))); do grep -q "$TAG FIO-START" "$SERIAL" 2>/dev/null && break; sleep 0.1; done
    sleep "$KILL_AFTER"
    kill -KILL "$PID_A" 2>/dev/null && echo "killed host A (pid $PID_A) $KILL_AFTER s into fio" >"$IT_WORK/killed"
) &
KILLER=$!
it_on_exit "it_kill_pid $KILLER"
it_qemu_run "$TIMEOUT" "$SERIAL" "$TAG" \
    -m 768 -smp 1 -kernel "$IT_KERNEL" -initrd "$IT_WORK/initrd" \
    -append "console=ttyS0 panic=-1 loglevel=4" \
    -netdev "tap,id=n0,ifname=$IT_TAP,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,romfile="
QRC=$?
it_kill_pid "$KILLER"
kill -INT "$CAPTURE" 2>/dev/null; wait "$CAPTURE" 2>/dev/null
it_guest_verdicts "$SERIAL" "$TAG" "$QRC"
it_check_nic_stall "$SERIAL"
[ -s "$IT_WORK/killed" ] && it_pass "$(cat "$IT_WORK/killed")" || it_fail "[infra] host A was not killed during fio"
grep "took over" "$IT_WORK/b.log" | sed 's/^/  b| /'
grep -q "took over e$SHELF.$SLOT" "$IT_WORK/b.log" && it_pass "host B took over" || it_fail "[target] host B did not take over"
last_a=$(tcpdump -r "$IT_WORK/guest.pcap" -nn -tt "ether src $MAC_A and ether[14] & 0x08 != 0" 2>/dev/null | tail -1 | cut -d' ' -f1)
first_b=$(tcpdump -r "$IT_WORK/guest.pcap" -nn -tt "ether src $MAC_B and ether[14] & 0x08 != 0 and ether[19] = 0" 2>/dev/null | head -1 | cut -d' ' -f1)
it_log "failover time: $(awk -v a="$last_a" -v b="$first_b" 'BEGIN { printf "%.2f", b - a }') s (last reply from host A to the guest, first ATA reply from host B)"
replies_b_before=$(tcpdump -r "$IT_WORK/guest.pcap" -nn -tt "ether src $MAC_B and ether[14] & 0x08 != 0" 2>/dev/null | awk -v a="$last_a" '$1 < a' | wc -l)
[ "$replies_b_before" = 0 ] && it_pass "host B sent 0 replies while host A lived" || it_fail "[target] host B replied $replies_b_before times while host A lived"
it_kill_pid "$PID_B"

# ---- the image, read back through librbd on the host
ceph_rbd export rbd/img "$IT_WORK/image.raw" >/dev/null 2>&1 || it_fail "[infra] rbd export failed"
# shellcheck disable=SC2086
fio --name=failover --filename="$IT_WORK/image.raw" $FIO_ARGS --randseed=$SEED --offset=$OFFSET --ioengine=psync --verify_only=1 --verify_state_save=0 >"$IT_WORK/verify.log" 2>&1 &&
    grep -q 'err= 0' "$IT_WORK/verify.log" &&
    it_pass "host: the image read back through librbd holds every block the guest wrote (fio --verify_only)" ||
    it_fail "[data] host: fio --verify_only on the exported image: $(grep -E 'bad |err= *[1-9]|^fio: ' "$IT_WORK/verify.log" | head -n 2 | tr '\n' ' ')"
# shellcheck disable=SC2086
if fio --name=failover --filename="$IT_WORK/image.raw" $FIO_ARGS --randseed=$SEED --offset=$CONTROL_OFFSET --ioengine=psync --verify_only=1 --verify_state_save=0 >"$IT_WORK/verify-wrong.log" 2>&1 &&
    grep -q 'err= 0' "$IT_WORK/verify-wrong.log"; then
    it_fail "[infra] negative control: the job verified at $CONTROL_OFFSET, where nothing was written: the check cannot fail"
else
    it_pass "negative control: the same job does not verify at $CONTROL_OFFSET, where the guest wrote nothing"
fi
it_result
