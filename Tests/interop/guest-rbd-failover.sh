#!/bin/sh
# Guest half of test-rbd-failover-linux.sh (busybox sh in the QEMU guest, /test/run.sh). aoe.ko finds the
# export (served by the active host; the standby is silent), then fio writes with crc32c verification while the
# host kills the active target; the standby takes over and aoe.ko carries on through it. Lines for the host
# start with $TAG: CHECK PASS|FAIL <class> <name>: <detail>; INFO <text>; FIO-START; RESULT PASS|FAIL (last).
. /test/env
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
DMESG_LINES=12
. /test/report.sh

DEV=/dev/etherd/e$SHELF.$SLOT
SYS="/sys/block/etherd!e$SHELF.$SLOT"
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up || { bad infra net "cannot bring eth0 up"; finish; }
insmod /lib/modules/aoe.ko aoe_iflist=eth0 || { bad infra aoe "insmod aoe.ko failed"; finish; }
t0=$(date +%s)
while :; do
    [ -b "$DEV" ] && grep -q up "$SYS/state" 2>/dev/null && break
    [ $(($(date +%s) - t0)) -ge 30 ] && break
    echo >/dev/etherd/discover 2>/dev/null
    sleep 1
done
[ -b "$DEV" ] || { bad target discover "$DEV did not appear within 30 s"; finish; }
ok target discover "$DEV appeared, $(cat "$SYS/size") sectors, mac $(cat "$SYS/mac")"

say FIO-START
start=$(date +%s)
# shellcheck disable=SC2086
if fio --name=failover --filename="$DEV" $FIO_ARGS --randseed=$SEED --offset=$OFFSET --ioengine=libaio --iodepth=8 \
    --direct=1 --do_verify=1 --verify_dump=0 >/tmp/fio.log 2>&1 && grep -q 'err= 0' /tmp/fio.log; then
    ok data fio "fio wrote and verified every block across the failover in $(($(date +%s) - start)) s"
else
    bad data fio "fio: $(grep -E 'err=|verify|fio:' /tmp/fio.log | head -n 3 | tr '\n' ' ')"
fi
info "aoe after the run: state=$(cat "$SYS/state" 2>/dev/null) mac=$(cat "$SYS/mac" 2>/dev/null)"
finish
