#!/bin/sh
# Runs inside the QEMU guest (busybox sh), started by /init; settings in /test/config (test-attach.sh).
# aoe-target serves the guest's AHCI drive (/dev/sda, --passthrough, e1.1) and an image file (e1.2) on v0;
# `aoectl attach` on the veth peer makes each a local SCSI disk through TCMU + tcm_loop. Reports through
# /test/report.sh (CHECK/INFO/RESULT lines for the host).
. /test/config
. /test/report.sh
OUT=/tmp/out
LBAS="66000 100000 131064"       # pattern sectors (8 each) outside the file system (first 32 MiB)

mount -t configfs none /sys/kernel/config 2>/dev/null
i=0; while [ ! -b /dev/sda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/sda ] || { bad infra disk "no /dev/sda"; finish; }

ip link set lo up
ip link add v0 type veth peer name v1
CIF=$(ls /sys/class/net | grep -v -x -e lo -e v0 | head -1)
ip link set v0 up; ip link set "$CIF" up
sleep 1

dd if=/dev/zero of=/tmp/image.img bs=1M count=48 2>/dev/null
aoe-target 1 1 v0 /dev/sda --passthrough >/tmp/t1.log 2>&1 &
T1=$!
aoe-target 1 2 v0 /tmp/image.img >/tmp/t2.log 2>&1 &
T2=$!
up=0
for i in $(seq 60); do
    aoectl identify -i "$CIF" 1.1 --timeout 1 >/dev/null 2>&1 && aoectl identify -i "$CIF" 1.2 --timeout 1 >/dev/null 2>&1 && { up=1; break; }
done
[ $up = 1 ] && ok target targets-up "e1.1 (/dev/sda, --passthrough) and e1.2 (image) answer on $CIF" ||
    { bad target targets-up "the targets did not answer"; cat /tmp/t1.log /tmp/t2.log; finish; }

# attach SHELF.SLOT NAME: starts aoectl attach in the background; APID, DEV, SG once it printed its JSON.
attach() {
    aoectl attach -i "$CIF" "$1" --json >/tmp/$2.json 2>/tmp/$2.err &
    APID=$!
    DEV="" SG=""
    for i in $(seq 600); do
        [ -s /tmp/$2.json ] && break
        kill -0 $APID 2>/dev/null || break
        sleep 0.2
    done
    DEV=$(jq -r .block_device /tmp/$2.json 2>/dev/null)
    SG=$(jq -r .generic_device /tmp/$2.json 2>/dev/null)
    [ -b "$DEV" ] && [ -c "$SG" ]
}
# detach: SIGTERM to the attach process; it removes the disk and its configfs objects, then exits 0.
detach() {
    kill -TERM $APID
    for i in $(seq 300); do kill -0 $APID 2>/dev/null || break; sleep 0.1; done
    if kill -0 $APID 2>/dev/null; then
        info "aoectl attach still running 30 s after SIGTERM: $(tail -3 /tmp/*.err | tr '\n' ' ')"
        kill -KILL $APID
        wait $APID
        return 1
    fi
    wait $APID
}
configfs_objects() { ls /sys/kernel/config/target/core 2>/dev/null | grep -c '^user_'; ls /sys/kernel/config/target/loopback 2>/dev/null | grep -c '^naa'; }

# Clear errors: a target that does not answer; a kernel module missing.
aoectl attach -i "$CIF" 1.9 --timeout 1 >$OUT 2>&1; rc=$?
[ $rc = 1 ] && grep -q "e1.9" $OUT && ok target error-no-target "attach of a target nobody serves: exit 1, '$(cat $OUT)'" ||
    bad target error-no-target "attach 1.9: exit $rc, '$(cat $OUT)'"
if rmmod tcm_loop 2>/dev/null; then
    aoectl attach -i "$CIF" 1.1 >$OUT 2>&1; rc=$?
    [ $rc = 1 ] && grep -q "kernel module tcm_loop is not loaded" $OUT && ok target error-no-module "without tcm_loop: exit 1, '$(cat $OUT)'" ||
        bad target error-no-module "without tcm_loop: exit $rc, '$(cat $OUT)'"
    insmod /lib/modules/tcm_loop.ko
else
    bad infra error-no-module "rmmod tcm_loop failed"
fi

# ---------------------------------------------------------------- the pass-through drive
if attach 1.1 pt; then
    ok target attach "aoectl attach 1.1: $(cat /tmp/pt.json)"
else
    bad target attach "aoectl attach 1.1 printed no usable disk: $(cat /tmp/pt.json /tmp/pt.err 2>/dev/null | head -c 600)"
    dmesg | tail -20; finish
fi
model=$(cat /sys/block/${DEV#/dev/}/device/vendor 2>/dev/null)
info "attached disk $DEV ($SG): vendor '$model', $(cat /sys/block/${DEV#/dev/}/size) sectors"

# smartctl -d sat through the bridge against smartctl on the drive itself.
smart_summary() {   # smartctl output -> model, serial, capacity, health, attribute table (ID NAME VALUE WORST THRESH)
    awk '/^Device Model:|^Serial Number:|^User Capacity:|^SMART overall-health/ { print } 
         /^ID# ATTRIBUTE_NAME/ { t = 1; next } t && NF >= 10 && $1 ~ /^[0-9]+$/ { print $1, $2, $4, $5, $6 } t && NF == 0 { t = 0 }' "$1"
}
smartctl -d sat -i -H -A "$DEV" >/tmp/smart-att.txt 2>&1
smartctl -i -H -A /dev/sda >/tmp/smart-ref.txt 2>&1
smart_summary /tmp/smart-att.txt >/tmp/smart-att.sum
smart_summary /tmp/smart-ref.txt >/tmp/smart-ref.sum
if [ -s /tmp/smart-ref.sum ] && grep -q "Serial Number: *$SERIAL" /tmp/smart-ref.sum && grep -q '^[0-9]' /tmp/smart-ref.sum &&
   cmp -s /tmp/smart-att.sum /tmp/smart-ref.sum; then
    ok data smartctl "smartctl -d sat -i -H -A $DEV = smartctl on /dev/sda ($(wc -l </tmp/smart-ref.sum) lines: model, serial, capacity, health, $(grep -c '^[0-9]' /tmp/smart-ref.sum) attributes)"
else
    bad data smartctl "smartctl differs: attached: $(tr '\n' '|' </tmp/smart-att.sum | head -c 500) drive: $(tr '\n' '|' </tmp/smart-ref.sum | head -c 500)"
    head -40 /tmp/smart-att.txt | while IFS= read -r l; do info "smartctl $DEV: $l"; done
fi

hdparm_summary() { grep -E 'Model Number:|Serial Number:|Firmware Revision:|LBA48  user addressable sectors:|device size with M = 1024' "$1" | tr -s ' '; }
hdparm -I "$DEV" >/tmp/hd-att.txt 2>&1
hdparm -I /dev/sda >/tmp/hd-ref.txt 2>&1
hdparm_summary /tmp/hd-att.txt >/tmp/hd-att.sum; hdparm_summary /tmp/hd-ref.txt >/tmp/hd-ref.sum
if [ "$(wc -l </tmp/hd-ref.sum)" -ge 4 ] && cmp -s /tmp/hd-att.sum /tmp/hd-ref.sum; then
    ok data hdparm "hdparm -I $DEV = hdparm -I /dev/sda ($(tr '\n' '|' </tmp/hd-ref.sum))"
else
    bad data hdparm "hdparm -I differs: attached: $(tr '\n' '|' </tmp/hd-att.sum) drive: $(tr '\n' '|' </tmp/hd-ref.sum) ($(head -c 300 /tmp/hd-att.txt))"
fi

sg_sat_identify -r "$SG" >/tmp/id-att.bin 2>/tmp/id-att.err
sg_sat_identify -r /dev/sda >/tmp/id-ref.bin 2>/dev/null
if [ "$(wc -c </tmp/id-ref.bin)" = 512 ] && cmp -s /tmp/id-att.bin /tmp/id-ref.bin; then
    ok data sg_sat_identify "sg_sat_identify -r $SG: the 512 IDENTIFY bytes of /dev/sda"
else
    bad data sg_sat_identify "sg_sat_identify -r $SG: $(wc -c </tmp/id-att.bin) bytes, not the drive's ($(head -c 200 /tmp/id-att.err))"
fi

# Writes with O_DIRECT at several LBAs, read back through the attached disk and straight from /dev/sda.
n=0
for lba in $LBAS; do
    dd if=/test/pattern-$lba.bin of="$DEV" bs=512 seek=$lba count=8 oflag=direct 2>/dev/null || bad target write "dd to $DEV at $lba failed"
done
blockdev --flushbufs "$DEV" 2>/dev/null
for lba in $LBAS; do
    dd if="$DEV" of=/tmp/back.bin bs=512 skip=$lba count=8 iflag=direct 2>/dev/null
    dd if=/dev/sda of=/tmp/drive.bin bs=512 skip=$lba count=8 iflag=direct 2>/dev/null
    cmp -s /tmp/back.bin /test/pattern-$lba.bin && cmp -s /tmp/drive.bin /test/pattern-$lba.bin && n=$((n + 1))
done
[ $n = 3 ] && ok data dd "O_DIRECT writes at LBAs $LBAS: read back through $DEV and from /dev/sda" ||
    bad data dd "only $n of 3 patterns read back through $DEV and from /dev/sda"
# Control: the same comparison one sector off must fail.
dd if="$DEV" of=/tmp/back.bin bs=512 skip=66001 count=8 iflag=direct 2>/dev/null
cmp -s /tmp/back.bin /test/pattern-66000.bin && bad data dd-control "the pattern also matches one sector off: the check cannot fail" ||
    ok data dd-control "one sector off the pattern does not match (the check can fail)"

# A file system on the attached disk: mkfs, mount, a file, unmount; the host reads the file from the image.
if /usr/sbin/mke2fs -q -F -t ext4 "$DEV" 32M >$OUT 2>&1 && mkdir -p /mnt/a && mount -t ext4 "$DEV" /mnt/a; then
    cp /test/file.bin /mnt/a/file.bin && sync
    umount /mnt/a && ok data mkfs "mke2fs -t ext4 + mount + file + umount on $DEV" || bad data mkfs "umount $DEV failed"
else
    bad data mkfs "mke2fs/mount on $DEV: $(head -c 300 $OUT)"
fi

# SECURITY ERASE UNIT (F4h) in ATA PASS-THROUGH (16), PIO data-out of one sector: refused by the target's
# policy; the sense must carry the ABRT the target answered with (the host's trace checks the drive never saw it).
head -c 512 /dev/zero >/tmp/zero512
sg_raw -v -s 512 -i /tmp/zero512 "$SG" 85 0b 06 00 00 00 01 00 00 00 00 00 00 40 f4 00 >$OUT 2>&1
sense=$(awk '/Raw sense data/ { f = 1; next } f && NF == 0 { f = 0 } f { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9a-fA-F][0-9a-fA-F]$/) printf "%s ", tolower($i) }' $OUT)
# descriptor sense: 72 0b 00 00 ... ; descriptor 09 0c at byte 8: error at byte 11, status at byte 21
set -- $sense
if [ "${1:-}" = 72 ] && [ "${2:-}" = 0b ] && [ "${9:-}" = 09 ] && [ "${12:-}" = 04 ] && [ "${22:-}" = 51 ]; then
    ok target security-erase "SECURITY ERASE UNIT through $SG: CHECK CONDITION, ABORTED COMMAND, ATA status 51h error 04h (ABRT) in the ATA Status Return descriptor"
else
    bad target security-erase "SECURITY ERASE UNIT through $SG: sense '$sense' ($(tr '\n' ' ' <$OUT | head -c 400))"
fi

detach && ok target detach "SIGTERM: aoectl attach removed $DEV and exited 0 ($(tail -1 /tmp/pt.err))" ||
    bad target detach "aoectl attach did not exit 0 on SIGTERM: $(tail -3 /tmp/pt.err)"
[ ! -e "$DEV" ] && [ "$(configfs_objects | tr '\n' ' ')" = "0 0 " ] && ok target cleanup "no $DEV, no configfs objects left" ||
    bad target cleanup "left behind: $(ls $DEV 2>&1) $(ls -R /sys/kernel/config/target 2>&1 | head -20 | tr '\n' ' ')"

# ---------------------------------------------------------------- an image export: a file system survives detach and attach
if attach 1.2 img; then
    # UNMAP: the image (on tmpfs) has TRIM, so the attached disk offers logical block provisioning, Linux turns
    # blkdiscard into UNMAP, the bridge into DATA SET MANAGEMENT TRIM, the target into a hole in the image.
    max=$(cat /sys/block/${DEV#/dev/}/queue/discard_max_bytes 2>/dev/null)
    [ "${max:-0}" -gt 0 ] && ok data unmap-offered "$DEV: discard_max_bytes $max (READ CAPACITY(16) LBPME, VPD B0h/B2h)" ||
        bad data unmap-offered "$DEV: discard_max_bytes '${max:-}': Linux did not take the disk as thin-provisioned"
    # 256 KiB at 40 MiB (sector 81920), and the sector before it; 512-byte blocks as busybox dd aligns them
    # for O_DIRECT.
    head -c 262144 /dev/urandom >/tmp/discard.bin
    dd if=/tmp/discard.bin of="$DEV" bs=512 seek=81920 oflag=direct 2>/dev/null
    dd if=/tmp/discard.bin of="$DEV" bs=512 seek=81919 count=1 oflag=direct 2>/dev/null
    head -c 512 /tmp/discard.bin >/tmp/edge.want
    head -c 262144 /dev/zero >/tmp/zero256k
    used=$(stat -c %b /tmp/image.img)
    dd if="$DEV" of=/tmp/back.bin bs=512 skip=81920 count=512 iflag=direct 2>/dev/null
    cmp -s /tmp/back.bin /tmp/discard.bin && before=written || before=missing
    blkdiscard -o $((81920 * 512)) -l 262144 "$DEV" >$OUT 2>&1; rc=$?
    # Measured before reading back: a read through the target's mapping of a tmpfs image allocates the pages again.
    freed=$(( (used - $(stat -c %b /tmp/image.img)) * 512 ))
    dd if="$DEV" of=/tmp/back.bin bs=512 skip=81920 count=512 iflag=direct 2>/dev/null
    dd if="$DEV" of=/tmp/edge.bin bs=512 skip=81919 count=1 iflag=direct 2>/dev/null
    cmp -s /tmp/back.bin /tmp/zero256k && zeros=yes || zeros=no
    cmp -s /tmp/edge.bin /tmp/edge.want && edge=yes || edge=no
    if [ $rc = 0 ] && [ $before = written ] && [ $zeros = yes ] && [ $edge = yes ] && [ $freed -ge 262144 ]; then
        ok data unmap "blkdiscard of 256 KiB at 40 MiB on $DEV: reads back as zeros (it held the pattern before), the sector before it is intact, the image gave back $freed bytes"
    else
        bad data unmap "blkdiscard on $DEV: exit $rc ($(head -c 200 $OUT)), pattern before: $before, zeros after: $zeros, sector before intact: $edge, freed $freed bytes"
    fi
    /usr/sbin/mke2fs -q -F -t ext4 "$DEV" >$OUT 2>&1 && mount -t ext4 "$DEV" /mnt/a && cp /test/file.bin /mnt/a/file.bin && umount /mnt/a &&
        ok data image-mkfs "e1.2 attached as $DEV: mkfs, mount, file, umount" || bad data image-mkfs "mkfs/mount/file on $DEV: $(head -c 300 $OUT)"
    detach
else
    bad target image-attach "aoectl attach 1.2: $(cat /tmp/img.json /tmp/img.err 2>/dev/null | head -c 400)"
fi
if attach 1.2 img2; then
    if mount -t ext4 "$DEV" /mnt/a && cmp -s /mnt/a/file.bin /test/file.bin; then
        ok data image-reattach "after detach and attach ($DEV): the file is there, byte for byte"
    else
        bad data image-reattach "after detach and attach: the file is missing or differs"
    fi
    umount /mnt/a 2>/dev/null
    # A crash: the attach process killed; `aoectl detach` removes what it left.
    kill -KILL $APID; wait $APID 2>/dev/null
    info "after kill -9: $(ls /sys/bus/scsi/devices/ | tr '\n' ' '), tpg address $(cat /sys/kernel/config/target/loopback/naa.*/tpgt_1/address 2>&1)"
    t0=$(cut -d. -f1 /proc/uptime)
    aoectl detach 1.2 >$OUT 2>&1; rc=$?
    t1=$(cut -d. -f1 /proc/uptime)
    [ $((t1 - t0)) -gt 10 ] && dmesg | tail -15 | while IFS= read -r l; do info "slow detach, dmesg: $l"; done
    [ $rc = 0 ] && [ $((t1 - t0)) -le 20 ] && [ "$(configfs_objects | tr '\n' ' ')" = "0 0 " ] &&
        ok target detach-after-crash "kill -9, then aoectl detach 1.2: exit 0 in $((t1 - t0)) s, no configfs objects left" ||
        bad target detach-after-crash "aoectl detach after kill -9: exit $rc ($(cat $OUT)), left: $(ls -R /sys/kernel/config/target 2>&1 | head -10 | tr '\n' ' ')"
    aoectl detach 1.2 >$OUT 2>&1; rc=$?
    [ $rc = 1 ] && grep -q "not attached" $OUT && ok target detach-nothing "aoectl detach of nothing: exit 1, '$(cat $OUT)'" ||
        bad target detach-nothing "aoectl detach of nothing: exit $rc, '$(cat $OUT)'"
else
    bad target image-reattach "second aoectl attach 1.2: $(cat /tmp/img2.json /tmp/img2.err 2>/dev/null | head -c 400)"
fi
# ---------------------------------------------------------------- AT_BENCH=1: the attached disk against aoe.ko (not a test)
# fio_line DEV NAME ARGS...: one fio run, its IOPS and MB/s as an INFO line.
fio_line() {
    local dev=$1 name=$2; shift 2
    fio --name=$name --filename=$dev --direct=1 --ioengine=libaio --time_based --runtime=8 --ramp_time=1 \
        --output-format=json "$@" >/tmp/fio.json 2>/tmp/fio.err
    info "bench $name on $dev: $(jq -r '.jobs[0].read.iops + .jobs[0].write.iops | floor' /tmp/fio.json) IOPS, $(jq -r '(.jobs[0].read.bw + .jobs[0].write.bw) / 1024 | floor' /tmp/fio.json) MiB/s"
}
bench_all() {
    fio_line "$1" "$2-randread-4k-qd16" --rw=randread --bs=4k --iodepth=16
    fio_line "$1" "$2-randwrite-4k-qd16" --rw=randwrite --bs=4k --iodepth=16
    fio_line "$1" "$2-seqread-128k-qd4" --rw=read --bs=128k --iodepth=4
    fio_line "$1" "$2-seqwrite-128k-qd4" --rw=write --bs=128k --iodepth=4
}
if [ "${BENCH:-0}" = 1 ]; then
    if attach 1.2 bench; then bench_all "$DEV" attach; detach; fi
    insmod /lib/modules/aoe.ko aoe_iflist="$CIF" && sleep 1 && echo >/dev/etherd/discover
    for i in $(seq 50); do [ -b /dev/etherd/e1.2 ] && break; sleep 0.2; done
    [ -b /dev/etherd/e1.2 ] && bench_all /dev/etherd/e1.2 aoe.ko || info "bench: no /dev/etherd/e1.2"
fi

kill $T1 $T2; wait $T1 $T2 2>/dev/null
sync
finish
