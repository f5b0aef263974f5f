#!/usr/bin/env bash
# The Linux kernel AoE initiator (aoe.ko in a QEMU/TCG guest) and two exports of ONE aoe-target process,
# served from a config file: the guest runs mkfs.ext4 on both at once and then fio randwrite jobs on both at
# once, each verified with crc32c (guest-two-exports.sh). After the guest powers off, the host checks each
# image file: e2fsck, the file each guest wrote, and fio --verify_only with that export's seed. A negative
# control checks image 1 with export 2's seed, which must fail: the data check can tell the two apart.
# env: AOE_TARGET (default .build/debug/aoe-target), TIMEOUT (QEMU, default 300 s), VERBOSE, KEEP.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/rerun-on-nic-stall.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT=${TIMEOUT:-300}
SHELF=0
SLOTS="1 2"
IMG_MIB=160
FS_BLOCKS=16384                       # ext4 on the first 64 MiB of each
FIO_ARGS="--rw=randwrite --bssplit=512/10:4k/40:8704/10:64k/40 --size=32M --randrepeat=1 --verify=crc32c --verify_fatal=1"
FIO_DESC="32 MiB of each, at 96 MiB of e0.1 and 128 MiB of e0.2, bs 512/4k/8704/64k"
# Each export's job writes its own region, so the data check can tell the images apart.
SEED_1=1111 OFFSET_1=96M
SEED_2=2222 OFFSET_2=128M

it_need_root
need_tool ip timeout flock cpio od dd cmp truncate ldd sha256sum realpath pgrep busybox fio mke2fs debugfs e2fsck "$IT_QEMU"
[ -e /dev/net/tun ] || it_skip "no /dev/net/tun"
it_pick_kernel
TARGET_BIN=${AOE_TARGET:-$IT_REPO/.build/debug/aoe-target}
[ -x "$TARGET_BIN" ] || it_die "$TARGET_BIN is not built (swift build)"
it_workdir linux2
NONCE=$(it_nonce)
TAG="@@AOEIT2-$NONCE@@"

EXTRA=$IT_WORK/extra
mkdir -p "$EXTRA/test"
for s in $SLOTS; do truncate -s "${IMG_MIB}M" "$IT_WORK/disk$s.img"; done
for ((i = 1; i <= 2000; i++)); do printf 'aoe-interop nonce=%s export=EXPORT line %05d\n' "$NONCE" "$i"; done >"$EXTRA/test/fs.txt"
cp "$IT_DIR/guest-two-exports.sh" "$EXTRA/test/run.sh"
cp "$IT_DIR/guest-report.sh" "$EXTRA/test/report.sh"
chmod 755 "$EXTRA/test/run.sh"
cat >"$EXTRA/test/env" <<EOV
TAG='$TAG'
SHELF=$SHELF
SLOTS='$SLOTS'
FS_BLOCKS=$FS_BLOCKS
FIO_ARGS='$FIO_ARGS'
FIO_DESC='$FIO_DESC'
SEED_1=$SEED_1
SEED_2=$SEED_2
OFFSET_1=$OFFSET_1
OFFSET_2=$OFFSET_2
EOV
it_initramfs_base
it_cpio_dir "$EXTRA" "$IT_WORK/extra.cpio"
cat "$IT_INITRAMFS_BASE" "$IT_WORK/extra.cpio" >"$IT_WORK/initrd"

it_net_setup 1500
CONF=$IT_WORK/aoe.toml
{
    echo "state_dir = \"$IT_WORK/state\""
    for s in $SLOTS; do
        printf '\n[[export]]\nshelf = %s\nslot = %s\ninterfaces = ["%s"]\npath = "%s"\n' "$SHELF" "$s" "$IT_TGT_IF" "$IT_WORK/disk$s.img"
    done
} >"$CONF"
it_log "target: $TARGET_BIN --config $CONF (two exports, one process)"
ip netns exec "$IT_NS" "$TARGET_BIN" --config "$CONF" >"$IT_WORK/target.log" 2>&1 </dev/null &
IT_TARGET_PID=$!
it_on_exit "it_kill_pid $IT_TARGET_PID"
sleep 1
it_target_alive || { sed 's/^/  target| /' "$IT_WORK/target.log"; it_die "target exited at start"; }
[ "$(grep -c ': serving ' "$IT_WORK/target.log")" = 2 ] && it_pass "one process serves both exports" ||
    it_fail "[target] the target log does not show two serving lines"

SERIAL=$IT_WORK/serial.log
it_qemu_run "$TIMEOUT" "$SERIAL" "$TAG" \
    -m 768 -smp 1 -kernel "$IT_KERNEL" -initrd "$IT_WORK/initrd" \
    -append "console=ttyS0 panic=-1 loglevel=4" \
    -netdev "tap,id=n0,ifname=$IT_TAP,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,romfile="
QRC=$?
it_guest_verdicts "$SERIAL" "$TAG" "$QRC"
it_check_nic_stall "$SERIAL"
it_target_alive || it_fail "[target] target process died during the run"
it_kill_pid "$IT_TARGET_PID"

# ---- the image files, on the host
for s in $SLOTS; do
    img=$IT_WORK/disk$s.img
    e2fsck -fn "$img" >"$IT_WORK/fsck-$s.log" 2>&1 && it_pass "host: e2fsck finds e$SHELF.$s's ext4 clean in disk$s.img" ||
        it_fail "[data] host: e2fsck on disk$s.img: $(tail -n 2 "$IT_WORK/fsck-$s.log" | tr '\n' ' ')"
    debugfs -R "cat /export.txt" "$img" 2>/dev/null | cmp -s - <(sed "s/EXPORT/$s/" "$EXTRA/test/fs.txt") &&
        it_pass "host: disk$s.img holds the file the guest wrote on e$SHELF.$s" ||
        it_fail "[data] host: /export.txt in disk$s.img is not what the guest wrote on e$SHELF.$s"
    seed_var=SEED_$s offset_var=OFFSET_$s
    # shellcheck disable=SC2086
    fio --name=verify --filename="$img" $FIO_ARGS --randseed=${!seed_var} --offset=${!offset_var} --ioengine=psync --verify_only=1 >"$IT_WORK/verify-$s.log" 2>&1 &&
        grep -q 'err= 0' "$IT_WORK/verify-$s.log" &&
        it_pass "host: fio --verify_only finds e$SHELF.$s's blocks at their offsets in disk$s.img" ||
        it_fail "[data] host: fio --verify_only on disk$s.img: $(grep -E 'bad |err= *[1-9]|^fio: ' "$IT_WORK/verify-$s.log" | head -n 2 | tr '\n' ' ')"
done
# Negative control: export 2's job is not in export 1's image.
# shellcheck disable=SC2086
if fio --name=verify --filename="$IT_WORK/disk1.img" $FIO_ARGS --randseed=$SEED_2 --offset=$OFFSET_2 --ioengine=psync --verify_only=1 >"$IT_WORK/verify-wrong.log" 2>&1 &&
    grep -q 'err= 0' "$IT_WORK/verify-wrong.log"; then
    it_fail "[infra] negative control: disk1.img verified with export 2's job: the check cannot tell the exports apart"
else
    it_pass "negative control: export 2's job does not verify against disk1.img"
fi
it_result
