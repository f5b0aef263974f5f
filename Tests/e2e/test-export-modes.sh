#!/usr/bin/env bash
# Export modes: read-only refuses writes and never changes the image; --sync makes every write durable
# (fdatasync before the reply, counted); offset/length windows map LBA 0 to the right byte; the null device.
. "$(dirname "$0")/lib.sh"
net_up 1500
IMG=$WORK/disk.img
truncate -s 16M "$IMG"
printf 'SECTOR-TEN' | dd of="$IMG" bs=512 seek=10 conv=notrunc status=none
sum_before=$(md5sum <"$IMG")

start_target "$WORK/ro.log" -r 1 1 t0 "$IMG"
head -c 512 /dev/urandom >"$WORK/s.bin"
aoectl write -i i0 1.1 --lba 0 --input "$WORK/s.bin" 2>"$WORK/ro.err"; rc=$?
check "read-only: write fails" test $rc -ne 0
check "read-only: failure is ATA ABRT" grep -q "ABRT" "$WORK/ro.err"
out=$(aoectl ata -i i0 1.1 --command 0x34 --lba48 --count 1 --write-file "$WORK/s.bin" --json)
check "read-only: WRITE SECTORS EXT gets status 0x51 error 0x04" test "$(echo "$out" | jq -c '[.status,.error]')" = "[81,4]"
check "read-only: reads work" aoectl read -i i0 1.1 --lba 10 --count 1 --output "$WORK/ten.bin"
check "read-only: sector 10 content" grep -q SECTOR-TEN "$WORK/ten.bin"
check "read-only: IDENTIFY says no write cache" grep -q "write cache: not supported" <(aoectl identify -i i0 1.1)
stop_target
check "read-only: image unchanged" test "$(md5sum <"$IMG")" = "$sum_before"

# Window: offset 10 sectors, length 100: LBA 0 is sector 10 of the file, LBA 100 is out of range.
start_target "$WORK/win.log" -o 10 -l 100 1 2 t0 "$IMG"
check "window: size is the length" grep -qx "sectors: 100" <(aoectl identify -i i0 1.2)
aoectl read -i i0 1.2 --lba 0 --count 1 --output "$WORK/w0.bin"
check "window: LBA 0 is file sector 10" grep -q SECTOR-TEN "$WORK/w0.bin"
out=$(aoectl ata -i i0 1.2 --command 0x20 --count 1 --lba 100 --read-sectors 1 --json)
check "window: LBA 100 is IDNF" test "$(echo "$out" | jq .error)" = 16
aoectl write -i i0 1.2 --lba 99 --input "$WORK/s.bin"
check "window: last LBA lands at file sector 109" cmp -s "$WORK/s.bin" <(dd if="$IMG" bs=512 skip=109 count=1 status=none)
stop_target

# --sync: every write acknowledged after an fdatasync; IDENTIFY shows the write cache off and it stays off.
start_target "$WORK/sync.log" -s 1 3 t0 "$IMG"
check "sync: IDENTIFY shows write cache disabled" grep -q "write cache: supported, disabled" <(aoectl identify -i i0 1.3)
out=$(aoectl ata -i i0 1.3 --command 0xEF --feature 0x02 --json)
check "sync: SET FEATURES enable write cache is refused" test "$(echo "$out" | jq .error)" = 4
aoectl bench -i i0 1.3 --rw randwrite --qd 8 --count 200 --region 0:4096 --json >"$WORK/sync.json"
check "sync: 200 writes without error" test "$(jq .errors "$WORK/sync.json")" = 0
kill -USR1 $TARGET_PID; sleep 0.3
counters=$(grep "counters:" "$WORK/sync.log" | tail -1)
syncs=$(grep -o 'fdatasync_calls=[0-9]*' <<<"$counters" | cut -d= -f2)
writes=$(grep -o ' writes=[0-9]*' <<<"$counters" | cut -d= -f2)
# Retransmitted writes run again (idempotent), so compare with the writes the target performed.
check "sync: writes reached fdatasync, at most one per write ($syncs for $writes writes, $(jq .retransmits "$WORK/sync.json") retransmits)" \
    test "${syncs:-0}" -ge 1 -a "${syncs:-0}" -le "${writes:-0}"
stop_target

# O_DIRECT on a disk filesystem (the frame's data area at the file's DIO alignment; merged requests through a
# bounce buffer), through io_uring and through the worker threads.
DISK=$(mktemp -p /var/tmp aoe-e2e.XXXXXX)
truncate -s 16M "$DISK"
start_target "$WORK/direct.log" -d 1 6 t0 "$DISK"
check "O_DIRECT image: served through io_uring" grep -q "I/O via io_uring" "$WORK/direct.log"
aoectl bench -i i0 1.6 --rw write --qd 16 --bs 8k --count 2048 --region 0:32768 --verify --seed 7 --json >"$WORK/fill.json"
check "O_DIRECT image: every block written and verified" test "$(jq -c '[.verify_mismatches, .verified_blocks, .errors]' "$WORK/fill.json")" = "[0,2048,0]"
aoectl bench -i i0 1.6 --rw randrw --qd 8 --bs 8k --count 1000 --region 0:32768 --verify --seed 7 --json >"$WORK/direct.json"
check "O_DIRECT image: bench --verify clean" test "$(jq -c '[.verify_mismatches, .errors, (.verified_blocks > 0)]' "$WORK/direct.json")" = "[0,0,true]"
stop_target
start_target "$WORK/threads.log" -d --io-engine threads 1 6 t0 "$DISK"
check "O_DIRECT image, --io-engine threads: served by threads" grep -q "I/O on 16 threads" "$WORK/threads.log"
aoectl bench -i i0 1.6 --rw randread --qd 8 --bs 8k --count 1000 --region 0:32768 --verify-existing --seed 7 --json >"$WORK/threads.json"
check "O_DIRECT image, threads: reads find what io_uring wrote" test "$(jq -c '[.verify_mismatches, .errors, (.verified_blocks > 0)]' "$WORK/threads.json")" = "[0,0,true]"
stop_target
# --inject-errors wraps whichever queue runs the I/O (here io_uring): every write fails with ABRT and never
# reaches the image, reads are untouched.
start_target "$WORK/fault.log" -d --inject-errors write:100 1 6 t0 "$DISK"
check "fault plan: over io_uring, named in the start-up line" grep -q "I/O via io_uring; failing 100.0% of write on purpose" "$WORK/fault.log"
sum_disk=$(md5sum <"$DISK")
aoectl write -i i0 1.6 --lba 0 --input "$WORK/s.bin" 2>"$WORK/fault.err"; rc=$?
check "fault plan: the write fails with ABRT" test $rc -ne 0 -a -n "$(grep ABRT "$WORK/fault.err")"
aoectl bench -i i0 1.6 --rw randread --qd 8 --bs 8k --count 200 --region 0:32768 --verify-existing --seed 7 --json >"$WORK/fault.json"
check "fault plan: reads still verify" test "$(jq -c '[.verify_mismatches, .errors]' "$WORK/fault.json")" = "[0,0]"
stop_target
check "fault plan: the image is unchanged" test "$(md5sum <"$DISK")" = "$sum_disk"
expect_bad_plan=$(in_ns timeout 10 "$BIN/aoe-target" --inject-errors trim:5 1 6 t0 "$DISK" 2>&1)
check "fault plan: a bad plan is a clear error" grep -q "inject-errors: must be OPS:PERCENT" <<<"$expect_bad_plan"
rm -f "$DISK"

# An image on tmpfs runs on the receive thread (it never waits for a disk): same answers, same data.
SHM=$(mktemp -p /dev/shm aoe-e2e.XXXXXX)
truncate -s 16M "$SHM"
start_target "$WORK/shm.log" 1 5 t0 "$SHM"
aoectl bench -i i0 1.5 --rw randrw --qd 16 --count 2000 --verify --json >"$WORK/shm.json"
check "tmpfs image: bench --verify clean" test "$(jq -c '[.verify_mismatches, .errors, (.verified_blocks > 0)]' "$WORK/shm.json")" = "[0,0,true]"
out=$(aoectl ata -i i0 1.5 --command 0x24 --lba48 --count 1 --lba 32768 --read-sectors 1 --json)
check "tmpfs image: IDNF past the end" test "$(echo "$out" | jq .error)" = 16
stop_target
rm -f "$SHM"

# Both receive paths: the packet ring (the default) and recvmmsg (--no-packet-ring) serve the same image with
# the same answers; the serving line says which one each run used. The same image through each, then the data
# one wrote is checked through the other.
SHM=$(mktemp -p /dev/shm aoe-e2e.XXXXXX)
truncate -s 16M "$SHM"
start_target "$WORK/ring.log" 1 7 t0 "$SHM"
check "receive: the default is the packet ring" grep -q "buffers, packet ring)" "$WORK/ring.log"
aoectl bench -i i0 1.7 --rw write --qd 32 --bs 4k --count 1024 --region 0:8192 --verify --seed 31 --json >"$WORK/ring.json"
check "receive ring: bench --verify over the whole region clean" test "$(jq -c '[.verify_mismatches, .errors, .verified_blocks]' "$WORK/ring.json")" = "[0,0,1024]"
stop_target
start_target "$WORK/plain.log" --no-packet-ring 1 7 t0 "$SHM"
check "receive: --no-packet-ring uses recvmmsg" grep -q "buffers, recvmmsg)" "$WORK/plain.log"
aoectl bench -i i0 1.7 --rw randread --qd 32 --bs 4k --count 3000 --region 0:8192 --verify-existing --seed 31 --json >"$WORK/plain.json"
check "recvmmsg: reads back what the ring run wrote" test "$(jq -c '[.verify_mismatches, .errors]' "$WORK/plain.json")" = "[0,0]"
aoectl bench -i i0 1.7 --rw randread --qd 8 --bs 4k --count 200 --region 0:8192 --verify-existing --seed 32 --json >"$WORK/wrong.json"
check "recvmmsg: the same check with another seed finds mismatches" test "$(jq '.verify_mismatches > 0' "$WORK/wrong.json")" = true
stop_target
rm -f "$SHM"

# Null device: reads are zeros, any size.
start_target "$WORK/null.log" 1 4 t0 null:1T
check "null: size" grep -qx "sectors: 2147483648" <(aoectl identify -i i0 1.4)
aoectl read -i i0 1.4 --lba 2147483000 --count 4 --output "$WORK/z.bin"
check "null: zeros" cmp -s "$WORK/z.bin" <(head -c 2048 /dev/zero)
stop_target
start_target "$WORK/nullro.log" -r 1 4 t0 null:1G
out=$(aoectl ata -i i0 1.4 --command 0x34 --lba48 --count 1 --write-file "$WORK/s.bin" --json)
check "null -r: writes refused with ABRT" test "$(echo "$out" | jq -c '[.status,.error]')" = "[81,4]"
stop_target
finish
