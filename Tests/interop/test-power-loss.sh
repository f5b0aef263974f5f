#!/usr/bin/env bash
# Power loss, for real: aoe-target --sync runs inside a QEMU guest and serves the guest's own virtio disk
# (/dev/vda, a whole block device; QEMU cache=none, so the host file holds exactly what the guest wrote to its
# disk and nothing of the guest's page cache). aoectl on the host writes numbered 4 KiB blocks one at a time
# over the tap and logs every write that was acknowledged. Mid-write the guest is killed with SIGKILL: the
# guest's memory is gone, as in a power cut. The host then reads the image file: every acknowledged block must
# be there, whole. CYCLES times. The same run without --sync must lose acknowledged writes (they sat in the
# guest's page cache), which shows the check can fail.
#
# env: CYCLES (with --sync, default 5; the issue's proof is CYCLES=20), LOSSY_CYCLES (without --sync,
#      default 1), AOE_TARGET / AOECTL (default .build/debug), VERBOSE=1, KEEP=1.
# exit: 0 pass, 1 fail, 77 skip. Last line: RESULT: PASS | RESULT: FAIL <class>.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CYCLES=${CYCLES:-5}
LOSSY_CYCLES=${LOSSY_CYCLES:-1}
DISK_MB=64
BLOCKS=4096                         # 4 KiB blocks on the disk; block n at LBA 8n
AOE_TARGET=${AOE_TARGET:-$IT_REPO/.build/debug/aoe-target}
AOECTL=${AOECTL:-$IT_REPO/.build/debug/aoectl}

it_need_root
need_tool ip timeout flock cpio od dd cmp truncate ldd busybox realpath pgrep "$IT_QEMU"
[ -e /dev/net/tun ] || it_skip "no /dev/net/tun"
for b in "$AOE_TARGET" "$AOECTL"; do [ -x "$b" ] || it_die "$b is not built (swift build)"; done
it_pick_kernel
it_workdir powerloss
TAG="@@AOEPL-$(it_nonce)@@"

# ---- the guest: busybox, virtio modules, aoe-target; /init serves /dev/vda over eth0
ROOT=$IT_WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,proc,sys,dev,tmp,lib/modules}
cp "$(command -v busybox)" "$ROOT/bin/busybox"
for a in $(busybox --list); do [ -e "$ROOT/bin/$a" ] || ln -s busybox "$ROOT/bin/$a"; done
guest_mod_resolve "$IT_MODDIR" virtio_pci virtio_net virtio_blk >"$IT_WORK/mods" || it_die "kernel modules missing"
while read -r m; do cp -n "$IT_MODDIR/$m" "$ROOT/lib/modules/"; basename "$m"; done <"$IT_WORK/mods" >"$ROOT/lib/modules/order"
guest_copy_with_libs "$AOE_TARGET" /usr/bin/aoe-target "$ROOT"
command -v strip >/dev/null && strip -s "$ROOT/usr/bin/aoe-target" 2>/dev/null
cat >"$ROOT/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m; done
. /etc/test.env
i=0; while [ ! -b /dev/vda ] || [ ! -e /sys/class/net/eth0 ]; do sleep 0.1; i=$((i + 1)); [ $i -gt 100 ] && break; done
ip link set lo up; ip link set eth0 up
echo "$TAG START $MODE"
# Foreground: the guest dies with it when the host pulls the plug.
aoe-target $MODE 1 1 eth0 /dev/vda 2>&1 | sed "s/^/$TAG TARGET /"
echo "$TAG EXIT"
poweroff -f
EOF
chmod 755 "$ROOT/init"
guest_cpio_dir "$ROOT" "$IT_WORK/base.cpio"

it_net_setup 1500
CTL() { ip netns exec "$IT_NS" timeout 20 "$AOECTL" "$@"; }

# block_data CYCLE N: the 4 KiB written as block N in cycle CYCLE (says what it is, in every sector)
block_data() { for s in 0 1 2 3 4 5 6 7; do printf '%-511s\n' "powerloss cycle=$1 block=$2 sector=$s"; done; }

# cycle N MODE: boot, write until the plug is pulled, check the image. Sets LOST and ACKED.
cycle() {
    local n=$1 mode=$2 img=$IT_WORK/disk.img serial=$IT_WORK/serial-$1.log qpid wpid i kill_after block
    rm -f "$img"; truncate -s "${DISK_MB}M" "$img"
    mkdir -p "$IT_WORK/cfg-$n/etc"
    printf "TAG='%s'\nMODE='%s'\n" "$TAG" "$mode" >"$IT_WORK/cfg-$n/etc/test.env"
    guest_cpio_dir "$IT_WORK/cfg-$n" "$IT_WORK/cfg.cpio"
    cat "$IT_WORK/base.cpio" "$IT_WORK/cfg.cpio" >"$IT_WORK/initrd"
    it_qemu_lock
    : >"$serial"
    # No timeout wrapper: $! must be QEMU itself, so SIGKILL reaches it (ip netns exec execs QEMU).
    ip netns exec "$IT_NS" "$IT_QEMU" -accel tcg -nodefaults -no-user-config -display none -monitor none \
        -no-reboot -m 512 -smp 1 -serial "file:$serial" -kernel "$IT_KERNEL" -initrd "$IT_WORK/initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3" \
        -drive "file=$img,format=raw,if=virtio,cache=none" \
        -netdev "tap,id=n0,ifname=$IT_TAP,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,romfile=" \
        >"$serial.qemu-out" 2>&1 </dev/null &
    qpid=$!
    it_on_exit "it_kill_pid $qpid"
    for i in $(seq 120); do grep -q "$TAG TARGET .*serving" "$serial" 2>/dev/null && break; kill -0 $qpid 2>/dev/null || break; sleep 0.5; done
    if ! grep -q "$TAG TARGET .*serving" "$serial"; then
        tr -d '\r' <"$serial" | tail -n 20 | sed 's/^/  serial| /'
        kill -KILL $qpid 2>/dev/null; wait $qpid 2>/dev/null; flock -u 9
        it_die "cycle $n: the guest's aoe-target did not start"
    fi
    # The writer: one block at a time, each logged once aoectl says it was acknowledged.
    : >"$IT_WORK/acked-$n"
    (
        for ((block = 0; block < BLOCKS; block++)); do
            block_data "$n" "$block" | CTL write -i "$IT_TGT_IF" 1.1 --lba $((block * 8)) --timeout 2 >/dev/null 2>&1 || continue
            echo "$block" >>"$IT_WORK/acked-$n"
        done
    ) &
    wpid=$!
    # Pull the plug once a random number (20-60) of writes were acknowledged.
    kill_after=$((20 + $(od -An -N1 -tu1 /dev/urandom) % 41))
    for i in $(seq 600); do [ "$(wc -l <"$IT_WORK/acked-$n")" -ge $kill_after ] && break; sleep 0.1; done
    kill -KILL $qpid 2>/dev/null
    wait $qpid 2>/dev/null
    flock -u 9
    kill $wpid 2>/dev/null; wait $wpid 2>/dev/null
    # What was acknowledged must be in the disk image, whole, at its place.
    ACKED=$(wc -l <"$IT_WORK/acked-$n") LOST=0
    while read -r block; do
        dd if="$img" bs=4096 skip="$block" count=1 status=none | cmp -s - <(block_data "$n" "$block") || LOST=$((LOST + 1))
    done <"$IT_WORK/acked-$n"
    it_log "cycle $n (${mode:-no --sync}): plug pulled after $ACKED acknowledged writes; $LOST of them missing from the image"
}

total_acked=0 total_lost=0
for ((c = 1; c <= CYCLES; c++)); do
    cycle "$c" --sync
    total_acked=$((total_acked + ACKED)) total_lost=$((total_lost + LOST))
done
if [ "$total_lost" = 0 ] && [ "$total_acked" -gt 0 ]; then
    it_pass "--sync: $CYCLES power cuts, 0 of $total_acked acknowledged 4 KiB writes lost"
else
    it_fail "[data] --sync: $total_lost of $total_acked acknowledged writes lost over $CYCLES power cuts"
fi
lossy_acked=0 lossy_lost=0
for ((c = 1; c <= LOSSY_CYCLES; c++)); do
    cycle "$((CYCLES + c))" ""
    lossy_acked=$((lossy_acked + ACKED)) lossy_lost=$((lossy_lost + LOST))
done
if [ "$lossy_lost" -gt 0 ]; then
    it_pass "negative control: without --sync, $lossy_lost of $lossy_acked acknowledged writes were lost (the check can fail)"
else
    it_fail "[infra] negative control: without --sync nothing was lost ($lossy_acked acknowledged): the power cut is not a power cut"
fi
it_result
