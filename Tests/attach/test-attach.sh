#!/usr/bin/env bash
# aoectl attach end to end, in a QEMU guest whose Debian kernel has TCMU (this host's kernel has none).
#
# The guest has an emulated AHCI drive (model AOEATTACHDISK, serial AOEATT0001; every ATA command it runs is
# traced to a file on the host). Inside it, aoe-target serves that drive with --passthrough (e1.1) and an
# image file (e1.2) on one end of a veth pair; `aoectl attach` on the other end makes each a local SCSI disk
# through target_core_user + tcm_loop. The guest (Tests/attach/guest-attach.sh) compares smartctl -d sat,
# hdparm -I and sg_sat_identify on the attached disk with the same tools on /dev/sda, writes with O_DIRECT
# and through ext4, sends SECURITY ERASE UNIT, discards 256 KiB of the image export with blkdiscard (UNMAP, then
# TRIM: zeros, and the image gives the space back), and detaches, re-attaches, and detaches after a kill -9.
# The host then checks the drive's trace (F4h never reached it; SMART and IDENTIFY did) and the image
# bytes (each pattern at its LBA and not one sector off; the ext4 file, read with debugfs).
#
# Exit: 0 pass, 1 fail, 77 skip. Environment: AOE_BIN_DIR (default .build/debug), TIMEOUT (QEMU, 420 s),
# KEEP=1 keeps the work folder (kept anyway on failure), VERBOSE=1 streams the serial console.
# BENCH=1 (a benchmark, not a test: Benchmarks/attach.sh) then runs fio on the attached image export and on
# the Linux aoe driver's disk of the same export, and prints both (guest| INFO bench ... lines).
set -u
AT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
AT_REPO=$(cd "$AT_DIR/../.." && pwd)
TIMEOUT=${TIMEOUT:-420}
QEMU=${QEMU:-qemu-system-x86_64}
MODEL=AOEATTACHDISK
SERIAL=AOEATT0001
DISK_MB=64
LBAS="66000 100000 131064"
BENCH=${BENCH:-0}
GUEST_BULKY="root initrd"
GUEST_KEPT="serial.log, trace.log, disk.img"
# shellcheck source=../lib/guest-harness.sh
. "$AT_DIR/../lib/guest-harness.sh"

[ "$(id -u)" = 0 ] || skip "must run as root (reads /boot/vmlinuz-*, packs kernel modules)"
. "$AT_DIR/../lib/need.sh"
. "$AT_DIR/../lib/guest-image.sh"
need_tool "$QEMU" cpio busybox jq ldd flock timeout cmp dd grep awk truncate mke2fs debugfs sg_raw sg_sat_identify hdparm smartctl
kver=$(guest_kernel_version)
[ -n "$kver" ] || skip "no /boot/vmlinuz-* with /lib/modules/*/modules.dep (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$kver
MODDIR=/lib/modules/$kver
AOE_BIN_DIR=${AOE_BIN_DIR:-$AT_REPO/.build/debug}
for b in aoe-target aoectl; do [ -x "$AOE_BIN_DIR/$b" ] || die "$AOE_BIN_DIR/$b is not built (swift build)"; done
"$AOE_BIN_DIR/aoectl" attach --help >/dev/null 2>&1 || die "$AOE_BIN_DIR/aoectl has no attach command"

WORK=$(mktemp -d /tmp/attach-XXXXXX) || die "mktemp failed"
NONCE=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
TAG="@@AOEAT-$NONCE@@"
log "kernel $kver, work $WORK"

root=$WORK/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,etc,lib/modules,test}
cp "$(command -v busybox)" "$root/bin/busybox"
for a in $(busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
guest_mod_resolve "$MODDIR" scsi_common scsi_mod libata libahci ahci sd_mod sg veth crc32c_generic ext4 \
    configfs uio target_core_mod target_core_user tcm_loop >"$WORK/mods" || die "kernel modules missing"
while read -r m; do cp -n "$MODDIR/$m" "$root/lib/modules/"; basename "$m" >>"$root/etc/modules"; done <"$WORK/mods"
for t in jq smartctl hdparm sg_raw sg_sat_identify; do guest_copy_with_libs "$(command -v $t)" "/usr/bin/$t" "$root"; done
guest_copy_with_libs "$(command -v mke2fs)" /usr/sbin/mke2fs "$root"
if [ "$BENCH" = 1 ]; then   # fio on the attached disk and on aoe.ko's, against the same target
    guest_copy_with_libs "$(command -v fio)" /usr/bin/fio "$root"
    cp "$MODDIR/$(guest_mod_resolve "$MODDIR" aoe | tail -1)" "$root/lib/modules/aoe.ko"
fi
cp /etc/mke2fs.conf "$root/etc/" 2>/dev/null
guest_copy_with_libs "$AOE_BIN_DIR/aoe-target" /usr/bin/aoe-target "$root"
guest_copy_with_libs "$AOE_BIN_DIR/aoectl" /usr/bin/aoectl "$root"
command -v strip >/dev/null && strip -s "$root/usr/bin/aoe-target" "$root/usr/bin/aoectl" 2>/dev/null
cp "$AT_DIR/guest-attach.sh" "$root/test/"
cp "$AT_REPO/Tests/interop/guest-report.sh" "$root/test/report.sh"
for lba in $LBAS; do
    for ((i = 0; i < 8; i++)); do guest_sector "AOEAT-$NONCE-LBA-$((lba + i))-"; done >"$root/test/pattern-$lba.bin"
done
{ printf 'AOEAT-FILE-%s\n' "$NONCE"; head -c 300000 /dev/urandom; } >"$root/test/file.bin"
cat >"$root/test/config" <<CFG
TAG='$TAG'
SERIAL=$SERIAL
BENCH=$BENCH
CFG
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin:/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in $(cat /etc/modules); do insmod /lib/modules/$m 2>/dev/null; done
sh /test/guest-attach.sh
printf '\052' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
sleep 2
poweroff -f
INIT
chmod 755 "$root/init"
guest_cpio_dir "$root" "$WORK/initrd"
log "initramfs: $(du -m "$WORK/initrd" | cut -f1) MiB"

img=$WORK/disk.img
truncate -s ${DISK_MB}M "$img"
printf '%s\n' ide_exec_cmd process_ncq_command >"$WORK/trace-events"
guest_qemu_lock || die "QEMU lock: see the line above"
serial=$WORK/serial.log
: >"$serial"
timeout -k 5 "$TIMEOUT" "$QEMU" -accel tcg -machine pc -m 768 -smp 1 \
    -nodefaults -no-user-config -display none -monitor none -no-reboot -serial "file:$serial" \
    -kernel "$KERNEL" -initrd "$WORK/initrd" -append "console=ttyS0 panic=-1 quiet loglevel=3" \
    -drive "if=none,id=d0,file=$img,format=raw" -device ahci,id=ahci -device "ide-hd,drive=d0,bus=ahci.0,model=$MODEL,serial=$SERIAL" \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 -trace "events=$WORK/trace-events,file=$WORK/trace.log" \
    >"$serial.qemu-out" 2>&1 </dev/null &
QEMU_PID=$!
start=$SECONDS
guest_wait_qemu "$QEMU_PID" "$serial" "$TAG"
rc=$?
QEMU_PID=""
log "QEMU exited with $rc after $((SECONDS - start)) s"
[ "$rc" = 85 ] || fail "[infra] QEMU exit status $rc, expected 85 (the guest leaves through isa-debug-exit)"

# The guest's verdicts.
markers=$(tr -d '\r' <"$serial" | grep -F "$TAG" | sed "s/^.*$TAG *//")
while IFS= read -r l; do
    case "$l" in
        "CHECK PASS "*) pass "guest ${l#CHECK PASS * }" ;;
        "CHECK FAIL "*) fail "guest ${l#CHECK FAIL }" ;;
    esac
done <<<"$markers"
grep -q '^RESULT ' <<<"$markers" || { fail "[infra] the guest did not finish"; tr -d '\r' <"$serial" | tail -20 | sed 's/^/  serial| /'; }
for step in targets-up error-no-target error-no-module attach smartctl hdparm sg_sat_identify dd dd-control mkfs security-erase detach cleanup \
            image-mkfs image-reattach detach-after-crash detach-nothing; do
    grep -qE "^CHECK PASS [a-z]+ $step:" <<<"$markers" || fail "guest check '$step' did not pass"
done

# What reached the drive.
cmds=$(awk 'match($0, /cmd 0x[0-9a-fA-F]+/) { print tolower(substr($0, RSTART + 4, RLENGTH - 4)) }' "$WORK/trace.log")
count() { grep -c -x "$1" <<<"$cmds"; }
[ "$(count 0xf4)" = 0 ] && pass "trace: SECURITY ERASE UNIT (F4h) never reached the drive" ||
    fail "trace: F4h reached the drive $(count 0xf4) time(s)"
[ "$(count 0xb0)" -gt 0 ] && [ "$(count 0xec)" -gt 0 ] && pass "trace: SMART (B0h, $(count 0xb0)x) and IDENTIFY (ECh, $(count 0xec)x) did reach it (the trace sees pass-through)" ||
    fail "trace: no SMART or IDENTIFY at the drive: the trace check would prove nothing"

# What landed in the image.
for lba in $LBAS; do
    dd if="$img" bs=512 skip="$lba" count=8 status=none | cmp -s - "$root/test/pattern-$lba.bin" &&
        pass "image: the pattern written through the attached disk is at LBA $lba" || fail "[data] image: no pattern at LBA $lba"
    dd if="$img" bs=512 skip=$((lba - 1)) count=8 status=none | cmp -s - "$root/test/pattern-$lba.bin" &&
        fail "[data] image: the pattern also matches at LBA $((lba - 1)): the check cannot fail" || true
done
debugfs -R "cat /file.bin" "$img" 2>/dev/null >"$WORK/file.out"
cmp -s "$WORK/file.out" "$root/test/file.bin" && pass "image: the ext4 file written through the attached disk reads back byte for byte (debugfs)" ||
    fail "[data] image: /file.bin in the image's ext4 is missing or differs ($(wc -c <"$WORK/file.out") bytes)"

[ "$FAILED" = 0 ] && { echo "RESULT: PASS"; exit 0; }
echo "RESULT: FAIL"
exit 1
