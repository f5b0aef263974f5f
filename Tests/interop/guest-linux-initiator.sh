#!/bin/sh
# Guest half of test-linux-initiator.sh (busybox sh inside the QEMU guest, run as /test/run.sh by /init).
# Reads /test/env (written by the host half) and the pattern files in /test/pat/.
# Every line meant for the host starts with $TAG:
#   $TAG CHECK PASS|FAIL <class> <name>: <detail>     class: data | target | infra
#   $TAG INFO <text>    $TAG PERF <job> <fio line>    $TAG MD5 <name> <md5>
#   $TAG RESULT PASS|FAIL failures=<n>                (always the last line when the guest finished)
. /test/env
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
DEV=/dev/etherd/e$SHELF.$SLOT
SYS="/sys/block/etherd!e$SHELF.$SLOT"
DMESG_LINES=15
. /test/report.sh
now() { cut -d' ' -f1 /proc/uptime; }

# Both refuse ranges past the end of the device: busybox dd would otherwise fall back from a
# failed lseek to reading its way there, sector by sector.
in_dev() {
    if [ $((($1 + $2) * 512)) -gt "$SIZE" ]; then
        echo "LBA $1+$2 is beyond the end of the device ($SIZE bytes)" >/tmp/dd.err
        return 1
    fi
}
# read N sectors at LBA with O_DIRECT into FILE (one request)
rd() { in_dev "$1" "$2" && dd if="$DEV" of="$3" bs=$(($2 * 512)) count=1 skip=$(($1 * 512)) iflag=direct,skip_bytes 2>/tmp/dd.err; }
# write FILE (N sectors) at LBA with O_DIRECT (one request)
wr() { in_dev "$1" "$2" && dd if="$3" of="$DEV" bs=$(($2 * 512)) count=1 seek=$(($1 * 512)) oflag=direct,seek_bytes conv=notrunc 2>/tmp/dd.err; }
first_diff() { cmp "$1" "$2" 2>&1 | head -n 1; }
# what a pattern sector says about itself, e.g. "region=seedB lba=140003"
what() {
    w=$(dd if="$1" bs=512 skip="$2" count=1 2>/dev/null | tr -c 'a-zA-Z0-9=. \n-' '?' | grep -o 'region=[^ ]* lba=[0-9]*' | head -n 1)
    echo "${w:-no pattern (zeros or foreign data)}"
}

info "run.sh started at uptime $(now) s"

# ---- network + driver
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if ! ip link set eth0 mtu "$MTU" || ! ip link set eth0 up; then
    bad infra net "cannot bring eth0 up with MTU $MTU"
    finish
fi
info "eth0 mtu $(cat /sys/class/net/eth0/mtu) mac $(cat /sys/class/net/eth0/address)"
if ! insmod /lib/modules/aoe.ko aoe_iflist=eth0; then
    bad infra aoe "insmod aoe.ko failed"
    finish
fi
t0=$(date +%s)
while :; do
    if [ -b "$DEV" ] && grep -q up "$SYS/state" 2>/dev/null; then break; fi
    el=$(($(date +%s) - t0))
    [ $el -ge 30 ] && break
    [ $el -gt 0 ] && [ $((el % 3)) = 0 ] && echo >/dev/etherd/discover 2>/dev/null
    sleep 0.5
done
if [ ! -b "$DEV" ]; then
    bad target discover "$DEV did not appear within 30 s (no Config/IDENTIFY reply usable by aoe.ko)"
    finish
fi
ok target discover "$DEV appeared after $(($(date +%s) - t0)) s, state $(cat "$SYS/state")"
PAYLOAD=$(cat "$SYS/payload" 2>/dev/null)
info "aoe: state=$(cat "$SYS/state" 2>/dev/null) mac=$(cat "$SYS/mac" 2>/dev/null) netif=$(cat "$SYS/netif" 2>/dev/null) fwver=$(cat "$SYS/firmware-version" 2>/dev/null) payload=$PAYLOAD"
if [ "$MTU" -le 1500 ]; then
    if [ "$PAYLOAD" = 1024 ]; then ok target payload "1024 bytes per frame at MTU $MTU"
    else bad target payload "aoe.ko uses $PAYLOAD bytes per frame at MTU $MTU, expected 1024"; fi
else
    if [ "$PAYLOAD" -gt 1024 ] && [ "$PAYLOAD" -le "$MAX_PAYLOAD" ]; then
        ok target payload "$PAYLOAD bytes per frame at MTU $MTU (jumbo frames in use; at most $MAX_PAYLOAD fit)"
    else
        bad target payload "aoe.ko uses $PAYLOAD bytes per frame at MTU $MTU, expected 1025..$MAX_PAYLOAD (jumbo)"
    fi
fi

# ---- size
SIZE=$(blockdev --getsize64 "$DEV" 2>/dev/null)
SIZE=${SIZE:-0}
if [ "$SIZE" = $((SECTORS * 512)) ]; then ok data size "$SIZE bytes = image size"
else bad data size "device has $SIZE bytes, image has $((SECTORS * 512))"; fi

# ---- data seeded by the host (read before anything is written)
for r in $SEEDS; do
    name=${r%%:*}; rest=${r#*:}; lba=${rest%%:*}; n=${rest#*:}
    if ! rd "$lba" "$n" /tmp/got.bin; then
        bad data "seed-$name" "O_DIRECT read of $n sectors at LBA $lba failed: $(tail -n 1 /tmp/dd.err)"
    elif cmp -s /tmp/got.bin "/test/pat/$name.bin"; then
        ok data "seed-$name" "$n sector(s) at LBA $lba read back as the host wrote them"
    else
        bad data "seed-$name" "LBA $lba+$n differs from host data ($(first_diff /tmp/got.bin "/test/pat/$name.bin")); first sector holds: $(what /tmp/got.bin 0)"
    fi
done

# ---- ext4: mkfs, mount, write, umount, mount, compare
FSOK=1
info "mkfs.ext4 on the first $((FS_BLOCKS * 4 / 1024)) MiB at uptime $(now)"
if ! mke2fs.e2fs -q -F -t ext4 -b 4096 -L aoeit -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$DEV" "$FS_BLOCKS" >/tmp/mkfs.log 2>&1; then
    bad data fs-mkfs "mke2fs failed: $(tail -n 2 /tmp/mkfs.log | tr '\n' ' ')"
    FSOK=0
elif ! mount -t ext4 "$DEV" /mnt 2>/tmp/mount.err; then
    bad data fs-mount "mount after mkfs failed: $(cat /tmp/mount.err)"
    FSOK=0
else
    mkdir -p /mnt/interop
    cp /test/pat/fs.txt /mnt/interop/data.txt
    dd if=/dev/urandom of=/mnt/interop/big.bin bs=1M count=8 2>/dev/null
    BIGMD5=$(md5sum /mnt/interop/big.bin | cut -d' ' -f1)
    say "MD5 big.bin $BIGMD5"
    sync
    umount /mnt || { bad data fs-umount "umount failed"; FSOK=0; }
    echo 3 >/proc/sys/vm/drop_caches
    blockdev --flushbufs "$DEV" 2>/dev/null
    if [ $FSOK = 1 ] && mount -t ext4 "$DEV" /mnt 2>/tmp/mount.err; then
        if cmp -s /mnt/interop/data.txt /test/pat/fs.txt && [ "$(md5sum /mnt/interop/big.bin | cut -d' ' -f1)" = "$BIGMD5" ]; then
            ok data fs "ext4 files (data.txt $(wc -c </test/pat/fs.txt) B, big.bin 8 MiB md5 $BIGMD5) survived umount + remount"
        else
            bad data fs "files differ after remount: $(first_diff /mnt/interop/data.txt /test/pat/fs.txt)"
        fi
        umount /mnt || bad data fs-umount "second umount failed"
    elif [ $FSOK = 1 ]; then
        bad data fs-remount "remount failed: $(cat /tmp/mount.err)"
    fi
fi

# ---- O_DIRECT writes: first sector, 3 sectors at an odd LBA, most of the last MiB
for r in $WRITES; do
    name=${r%%:*}; rest=${r#*:}; lba=${rest%%:*}; n=${rest#*:}
    if ! wr "$lba" "$n" "/test/pat/$name.bin"; then
        bad data "write-$name" "O_DIRECT write of $n sectors at LBA $lba failed: $(tail -n 1 /tmp/dd.err)"
        continue
    fi
    if ! rd "$lba" "$n" /tmp/got.bin; then
        bad data "write-$name" "O_DIRECT read-back of $n sectors at LBA $lba failed: $(tail -n 1 /tmp/dd.err)"
    elif cmp -s /tmp/got.bin "/test/pat/$name.bin"; then
        ok data "write-$name" "$n sector(s) written at LBA $lba with O_DIRECT read back identical"
    else
        bad data "write-$name" "read-back of LBA $lba+$n differs ($(first_diff /tmp/got.bin "/test/pat/$name.bin"))"
    fi
done

# ---- fio: random writes of mixed sizes with crc32c verification
info "fio verify job at uptime $(now)"
if fio --name=verify --filename="$DEV" $FIO_VERIFY_ARGS --ioengine=libaio --iodepth=16 --direct=1 \
    --do_verify=1 --verify_dump=0 >/tmp/fio-verify.log 2>&1 &&
    grep -q 'err= 0' /tmp/fio-verify.log; then
    ok data fio-verify "randwrite $FIO_VERIFY_DESC, crc32c verified by fio in the guest"
else
    bad data fio-verify "$(grep -E 'verify|err=|error' /tmp/fio-verify.log | head -n 3 | tr '\n' ' ')"
fi
grep -E '^ *(write|read): IOPS=' /tmp/fio-verify.log | while IFS= read -r l; do say "PERF verify-randwrite-mixed $l"; done

# ---- fio: throughput (numbers only, no verdict); region not checked by the host
if [ "$PERF" = 1 ]; then
    info "fio throughput jobs at uptime $(now)"
    for job in "seq-write-1M --rw=write --bs=1M --iodepth=8" \
               "seq-read-1M --rw=read --bs=1M --iodepth=8" \
               "rand-read-4k --rw=randread --bs=4k --iodepth=16 --time_based --runtime=8" \
               "rand-write-4k --rw=randwrite --bs=4k --iodepth=16 --time_based --runtime=8"; do
        set -- $job
        jn=$1; shift
        fio --name="$jn" --filename="$DEV" --offset="$PERF_OFFSET" --size="$PERF_SIZE" \
            --ioengine=libaio --direct=1 "$@" >/tmp/fio-perf.log 2>&1 ||
            bad data "fio-$jn" "$(grep -E 'err=|error' /tmp/fio-perf.log | head -n 2 | tr '\n' ' ')"
        grep -E '^ *(write|read): IOPS=' /tmp/fio-perf.log | while IFS= read -r l; do say "PERF $jn $l"; done
    done
fi

info "done at uptime $(now) s"
finish
