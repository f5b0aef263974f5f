#!/usr/bin/env bash
# The Linux kernel AoE initiator (aoe.ko, in a QEMU/TCG guest) against the target under test.
#
# Host: makes a sparse 256 MiB image, seeds LBA-tagged sectors, starts $TARGET (vblade syntax) on a
# veth in a private namespace, boots the guest on a tap in the same bridge.
# Guest (guest-linux-initiator.sh): insmod aoe aoe_iflist=eth0; device appears; payload per frame;
# size = image size; host-seeded sectors read back; mkfs.ext4 + mount + files survive a remount;
# O_DIRECT writes at LBA 0, 3 sectors at an odd LBA and 2047 sectors in the last MiB read back;
# fio random writes of mixed sizes (512 B .. 1 MiB, incl. 17-sector) verified with crc32c;
# fio throughput jobs (numbers only).
# Host again, after power-off: every region the guest wrote is checked IN THE IMAGE FILE at the
# offset where it belongs (LBA-tagged patterns, ext4 via debugfs/e2fsck, fio --verify_only), plus
# guard sectors around the writes and the host-seeded sectors that must be untouched.
#
# env: TARGET (default .build/debug/aoe-target), MTU (1500 | 9000, default 1500),
#      SHIFT (passed as -o SHIFT: a deliberately wrong target, the test must FAIL),
#      TIMEOUT (QEMU, default 300 s), PERF (1 = run throughput jobs, default 1),
#      VERBOSE=1 (whole serial console), KEEP=1 (keep /tmp/interop-linux-*), CAPTURE=1 (pcap).
# exit: 0 pass, 1 fail, 77 skip.  Last line: RESULT: PASS | RESULT: FAIL data | RESULT: FAIL target |
#       RESULT: FAIL infra  (FAIL lines are tagged [data] / [target] / [infra]).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/rerun-on-nic-stall.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MTU=${MTU:-1500}
SHIFT=${SHIFT:-0}
TIMEOUT=${TIMEOUT:-300}
PERF=${PERF:-1}
SHELF=0
SLOT=1
IMG_MIB=256
SECTORS=$((IMG_MIB * 2048))
FS_BLOCKS=16384                     # ext4 with 4 KiB blocks on the first 64 MiB (LBA 0..131071)
FIO_SEED=20240229
FIO_COMMON="--rw=randwrite --bssplit=512/10:4k/30:8704/10:64k/30:1m/20 --offset=96M --size=48M --randrepeat=1 --randseed=$FIO_SEED --verify=crc32c --verify_fatal=1"
FIO_VERIFY_DESC="48 MiB at 96 MiB, bs 512/4k/8704/64k/1M = 10/30/10/30/20 %"
PERF_OFFSET=160M
PERF_SIZE=64M

# Regions name:lba:sectors. Seeds: written by the host, read by the guest, must stay untouched.
SEEDS="seedA:131079:1 seedB:140001:40 seedC:$((SECTORS - 1)):1"
# Written by the guest with O_DIRECT (after the ext4 test).
WRITES="first:0:1 odd3:150001:3 lastmib:$((SECTORS - 2048)):2047"
# Guard sectors next to guest writes: must still be all zero.
GUARDS="150000 150004 $((SECTORS - 2049))"

case "$MTU" in ''|*[!0-9]*) echo "MTU must be a number" >&2; exit 2 ;; esac
case "$SHIFT" in ''|*[!0-9]*) echo "SHIFT must be a number of sectors" >&2; exit 2 ;; esac

it_need_root
need_tool ip timeout flock cpio od dd cmp truncate ldd sha256sum realpath pgrep busybox fio mke2fs debugfs e2fsck "$IT_QEMU"
[ -e /dev/net/tun ] || it_skip "no /dev/net/tun"
it_pick_kernel
it_resolve_target
it_workdir linux
NONCE=$(it_nonce)
TAG="@@AOEIT-$NONCE@@"
IMG=$IT_WORK/disk.img
T_START=$SECONDS

# One 512-byte sector per line: "aoe-interop nonce=N region=R lba=L i=I" padded, newline at byte 511.
mk_pattern() {
    local name=$1 lba=$2 n=$3 i
    for ((i = 0; i < n; i++)); do
        printf '%-511s\n' "aoe-interop nonce=$NONCE region=$name lba=$((lba + i)) i=$i"
    done
}

# ---------------------------------------------------------------- image + per-run initramfs part
it_log "image: $IMG ($IMG_MIB MiB sparse, $SECTORS sectors), nonce $NONCE, MTU $MTU, shift $SHIFT"
truncate -s "${IMG_MIB}M" "$IMG"
EXTRA=$IT_WORK/extra
mkdir -p "$EXTRA/test/pat"
for r in $SEEDS $WRITES; do
    IFS=: read -r name lba n <<<"$r"
    mk_pattern "$name" "$lba" "$n" >"$EXTRA/test/pat/$name.bin"
done
for r in $SEEDS; do
    IFS=: read -r name lba n <<<"$r"
    dd if="$EXTRA/test/pat/$name.bin" of="$IMG" bs=512 seek="$lba" conv=notrunc status=none
done
for ((i = 1; i <= 4000; i++)); do
    printf 'aoe-interop nonce=%s ext4 file line %05d\n' "$NONCE" "$i"
done >"$EXTRA/test/pat/fs.txt"
cp "$IT_DIR/guest-linux-initiator.sh" "$EXTRA/test/run.sh"
cp "$IT_DIR/guest-report.sh" "$EXTRA/test/report.sh"
chmod 755 "$EXTRA/test/run.sh"
cat >"$EXTRA/test/env" <<EOF
TAG='$TAG'
NONCE='$NONCE'
MTU=$MTU
MAX_PAYLOAD=$(((MTU - 36) / 512 * 512))
SHELF=$SHELF
SLOT=$SLOT
SECTORS=$SECTORS
FS_BLOCKS=$FS_BLOCKS
SEEDS='$SEEDS'
WRITES='$WRITES'
FIO_VERIFY_ARGS='$FIO_COMMON'
FIO_VERIFY_DESC='$FIO_VERIFY_DESC'
PERF=$PERF
PERF_OFFSET=$PERF_OFFSET
PERF_SIZE=$PERF_SIZE
EOF

T0=$SECONDS
it_initramfs_base
BASE=$IT_INITRAMFS_BASE
it_log "initramfs base: $BASE ($(du -m "$BASE" | cut -f1) MiB, $((SECONDS - T0)) s)"
it_cpio_dir "$EXTRA" "$IT_WORK/extra.cpio"
cat "$BASE" "$IT_WORK/extra.cpio" >"$IT_WORK/initrd"

# ---------------------------------------------------------------- network, target, guest
it_net_setup "$MTU"
it_capture_start
it_target_start "$SHIFT" "$SHELF" "$SLOT" "$IMG"

it_log "booting $IT_KERNEL under TCG (timeout ${TIMEOUT}s)"
SERIAL=$IT_WORK/serial.log
T_Q=$SECONDS
it_qemu_run "$TIMEOUT" "$SERIAL" "$TAG" \
    -m 768 -smp 1 -kernel "$IT_KERNEL" -initrd "$IT_WORK/initrd" \
    -append "console=ttyS0 panic=-1 loglevel=4" \
    -netdev "tap,id=n0,ifname=$IT_TAP,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,romfile="
QRC=$?
T_Q=$((SECONDS - T_Q))
it_log "guest finished: QEMU exit status $QRC after ${T_Q}s"

# ---------------------------------------------------------------- verdict, part 1: the guest
echo "== guest checks"
LINES=$(it_marker_lines "$SERIAL" "$TAG")
GUEST_RESULT=$(grep '^RESULT ' <<<"$LINES" | tail -n 1)
while IFS= read -r l; do
    if [[ $l =~ ^CHECK\ (PASS|FAIL)\ ([a-z]+)\ (.*)$ ]]; then
        if [ "${BASH_REMATCH[1]}" = PASS ]; then
            it_pass "guest ${BASH_REMATCH[3]}"
        else
            it_fail "[${BASH_REMATCH[2]}] guest ${BASH_REMATCH[3]}"
        fi
    fi
done <<<"$LINES"
if [ -z "$GUEST_RESULT" ]; then
    if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
        it_fail "[target] guest did not finish within ${TIMEOUT}s (I/O hung?)"
    else
        it_fail "[infra] guest stopped without a result (QEMU exit status $QRC)"
    fi
    echo "--- serial console (last 30 lines) ---"
    tr -d '\r' <"$SERIAL" | tail -n 30 | sed 's/^/  serial| /'
fi
it_check_nic_stall "$SERIAL"
it_target_alive || it_fail "[target] target process died during the run (see $IT_WORK/target.log)"
it_kill_pid "$IT_TARGET_PID"    # the image is ours again

# ---------------------------------------------------------------- verdict, part 2: the image file
echo "== host checks on the image file"
if ! grep -q '^CHECK PASS target discover' <<<"$LINES"; then
    echo "(skipped: the guest never got the device, so it wrote nothing to look for)"
    echo "wall time: $((SECONDS - T_START)) s (guest ${T_Q} s)"
    echo "--- target log ---"
    tail -n 20 "$IT_WORK/target.log" | sed 's/^/  target| /'
    it_result
fi
# locate NAME LBA: where within +-64 sectors of LBA the sector tagged region=NAME lba=LBA landed
locate() {
    local from=$(($2 > 64 ? $2 - 64 : 0)) off
    off=$(dd if="$IMG" bs=512 skip="$from" count=129 status=none | grep -aob "region=$1 lba=$2 " | head -n 1 | cut -d: -f1)
    [ -n "$off" ] || return 0
    off=$((from + off / 512))
    echo "; that sector's data is at image sector $off (off by $((off - $2)))"
}
# region_check KIND NAME LBA N: sectors LBA..LBA+N-1 of the image must equal pattern NAME
region_check() {
    local kind=$1 name=$2 lba=$3 n=$4 got=$IT_WORK/got.bin bad s found
    dd if="$IMG" of="$got" bs=512 skip="$lba" count="$n" status=none
    if cmp -s "$got" "$EXTRA/test/pat/$name.bin"; then
        it_pass "host $kind-$name: image sectors $lba..$((lba + n - 1)) hold exactly what belongs there"
        return
    fi
    bad=$(cmp "$got" "$EXTRA/test/pat/$name.bin" 2>/dev/null | awk '{print $5}' | tr -d ,)
    s=$(((${bad:-1} - 1) / 512))
    found=$(dd if="$got" bs=512 skip="$s" count=1 status=none | tr -c 'a-zA-Z0-9=. -' '?' | grep -o 'region=[^ ]* lba=[0-9]*' | head -n 1)
    [ -n "$found" ] || found="no pattern (zeros or foreign data)"
    it_fail "[data] host $kind-$name: image sector $((lba + s)) should hold region=$name lba=$((lba + s)), holds: $found$(locate "$name" $((lba + s)))"
}
for r in $SEEDS; do IFS=: read -r name lba n <<<"$r"; region_check seed "$name" "$lba" "$n"; done
for r in $WRITES; do IFS=: read -r name lba n <<<"$r"; region_check write "$name" "$lba" "$n"; done

nz=""
for g in $GUARDS; do
    if [ -n "$(dd if="$IMG" bs=512 skip="$g" count=1 status=none | tr -d '\0' | head -c 1)" ]; then nz+=" $g"; fi
done
if [ -z "$nz" ]; then
    it_pass "host guards: sectors next to the guest's writes ($GUARDS) are still zero"
else
    it_fail "[data] host guards: sectors that nobody should write are not zero:$nz"
fi

# ext4 as written by the guest, read by e2fsprogs on the host from the image file.
FSLOG=$IT_WORK/host-fs.log
if e2fsck -fn "$IMG" >"$FSLOG" 2>&1; then
    it_pass "host ext4: e2fsck -fn finds the guest's file system clean at offset 0 of the image"
else
    it_fail "[data] host ext4: e2fsck -fn failed: $(grep -v '^e2fsck' "$FSLOG" | head -n 2 | tr '\n' ' ')"
fi
BIGMD5=$(grep '^MD5 big.bin ' <<<"$LINES" | awk '{print $3}')
if debugfs -R "cat /interop/data.txt" "$IMG" 2>/dev/null | cmp -s - "$EXTRA/test/pat/fs.txt"; then
    it_pass "host ext4: /interop/data.txt read with debugfs equals what the guest wrote"
else
    it_fail "[data] host ext4: /interop/data.txt in the image differs from what the guest wrote"
fi
HOSTMD5=$(debugfs -R "cat /interop/big.bin" "$IMG" 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$HOSTMD5" = d41d8cd98f00b204e9800998ecf8427e ] && HOSTMD5="<file not readable>"
if [ -n "$BIGMD5" ] && [ "$HOSTMD5" = "$BIGMD5" ]; then
    it_pass "host ext4: /interop/big.bin (8 MiB) md5 $HOSTMD5 matches the guest's"
else
    it_fail "[data] host ext4: /interop/big.bin md5 in the image ${HOSTMD5} != guest's ${BIGMD5:-<none>}"
fi

# fio's random writes, verified again from the image file (headers carry their offset and seed).
FIOLOG=$IT_WORK/host-fio-verify.log
# shellcheck disable=SC2086
if fio --name=verify --filename="$IMG" $FIO_COMMON --ioengine=psync --verify_only=1 >"$FIOLOG" 2>&1 &&
    grep -q 'err= 0' "$FIOLOG" && grep -qE 'READ: .*io=4[0-9.]*MiB' "$FIOLOG"; then
    it_pass "host fio: --verify_only over the image file: every block of the guest's randwrite is at its offset"
else
    it_fail "[data] host fio: --verify_only over the image failed: $(grep -E 'bad |wanted|err= *[1-9]|^fio: ' "$FIOLOG" | head -n 2 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- report
echo "== fio in the guest (TCG, MTU $MTU, target $(basename "$IT_TARGET"))"
grep '^PERF ' <<<"$LINES" | sed 's/^PERF /  /'
if [ "$IT_FAILED" != 0 ]; then
    echo "== guest INFO lines"
    grep '^INFO ' <<<"$LINES" | sed 's/^INFO /  /'
    echo "--- target log ---"
    tail -n 20 "$IT_WORK/target.log" | sed 's/^/  target| /'
fi
echo "wall time: $((SECONDS - T_START)) s (guest ${T_Q} s)"
it_result
