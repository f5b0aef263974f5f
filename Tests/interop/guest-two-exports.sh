#!/bin/sh
# Guest half of test-linux-initiator-two-exports.sh (busybox sh in the QEMU guest, /test/run.sh).
# aoe.ko finds two exports of one aoe-target process; mkfs.ext4 runs on both at once, then one fio job per
# export with its own seed, both at once, with crc32c verification. Lines for the host start with $TAG:
#   CHECK PASS|FAIL <class> <name>: <detail>;  INFO <text>;  RESULT PASS|FAIL failures=<n> (last)
. /test/env
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
. /test/report.sh

i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up || { bad infra net "cannot bring eth0 up"; finish; }
insmod /lib/modules/aoe.ko aoe_iflist=eth0 || { bad infra aoe "insmod aoe.ko failed"; finish; }
t0=$(date +%s)
while :; do
    up=0
    for s in $SLOTS; do grep -q up "/sys/block/etherd!e$SHELF.$s/state" 2>/dev/null && [ -b "/dev/etherd/e$SHELF.$s" ] && up=$((up + 1)); done
    [ $up = 2 ] && break
    [ $(($(date +%s) - t0)) -ge 30 ] && break
    echo >/dev/etherd/discover 2>/dev/null
    sleep 1
done
for s in $SLOTS; do
    d=/dev/etherd/e$SHELF.$s
    if [ -b "$d" ]; then
        ok target "discover-$s" "$d appeared, $(cat "/sys/block/etherd!e$SHELF.$s/size") sectors, mac $(cat "/sys/block/etherd!e$SHELF.$s/mac")"
    else
        bad target "discover-$s" "$d did not appear within 30 s"
        finish
    fi
done

# ---- mkfs.ext4 on both at once, a file on each, remount, compare
for s in $SLOTS; do
    mke2fs.e2fs -q -F -t ext4 -b 4096 -L "aoe$s" -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "/dev/etherd/e$SHELF.$s" "$FS_BLOCKS" >/tmp/mkfs-$s.log 2>&1 &
done
wait
for s in $SLOTS; do
    d=/dev/etherd/e$SHELF.$s
    mkdir -p /mnt/$s
    if ! mount -t ext4 "$d" /mnt/$s 2>/tmp/mount.err; then
        bad data "fs-$s" "mount after the concurrent mkfs failed: $(cat /tmp/mount.err; tail -n 2 /tmp/mkfs-$s.log)"
        continue
    fi
    sed "s/EXPORT/$s/" /test/fs.txt >/mnt/$s/export.txt
    umount /mnt/$s && mount -t ext4 "$d" /mnt/$s 2>/tmp/mount.err &&
        sed "s/EXPORT/$s/" /test/fs.txt | cmp -s - /mnt/$s/export.txt &&
        ok data "fs-$s" "ext4 made while the other export was being made; its file survived umount + remount" ||
        bad data "fs-$s" "file on e$SHELF.$s differs or the remount failed"
    umount /mnt/$s
done

# ---- fio on both at once, each with its own seed, verified
args=""
for s in $SLOTS; do
    eval seed=\$SEED_$s offset=\$OFFSET_$s
    args="$args --name=e$s --filename=/dev/etherd/e$SHELF.$s --randseed=$seed --offset=$offset"
done
# shellcheck disable=SC2086
if fio --ioengine=psync --direct=1 $FIO_ARGS $args >/tmp/fio.log 2>&1 && grep -q 'err= 0' /tmp/fio.log && ! grep -qE 'err= *[1-9]' /tmp/fio.log; then
    ok data fio "one randwrite job per export at once, both verified with crc32c ($FIO_DESC)"
else
    bad data fio "fio failed: $(grep -E 'bad |verify|err= *[1-9]|^fio: ' /tmp/fio.log | head -n 3 | tr '\n' ' ')"
fi
finish
