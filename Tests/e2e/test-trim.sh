#!/usr/bin/env bash
# TRIM (ATA DATA SET MANAGEMENT) over a veth pair, through `aoectl discard`, on every device queue and mode:
# an image on ext4 through io_uring, with --direct, with --sync, on worker threads, and on tmpfs (inline).
# Each time: a written pattern, two ranges discarded (one 32 KiB aligned, one of 3 sectors), then everything
# read back: zeros exactly where discarded, the pattern everywhere else, and the aligned range a hole in the
# file. Refusals: an export with --no-trim and a read-only one offer no TRIM, and a range past the end is
# refused before it is sent.
. "$(dirname "$0")/lib.sh"
need_tool python3 cmp
net_up 1500

SECTORS=2048   # 1 MiB
head -c $((SECTORS * 512)) <(python3 -c '
import random, sys
random.seed(11)
sys.stdout.buffer.write(random.randbytes(2048 * 512))') >"$WORK/pattern.bin"
# What the image must hold afterwards: the pattern with sectors 128-191 and 7-9 zeroed.
python3 - "$WORK/pattern.bin" "$WORK/expected.bin" <<'EOF'
import sys
data = bytearray(open(sys.argv[1], 'rb').read())
for start, count in ((128, 64), (7, 3)):
    data[start * 512:(start + count) * 512] = bytes(count * 512)
open(sys.argv[2], 'wb').write(data)
EOF

# hole_at FILE BYTE: the next hole at or after BYTE starts at BYTE.
hole_at() { python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
sys.exit(0 if os.lseek(fd, int(sys.argv[2]), os.SEEK_HOLE) == int(sys.argv[2]) else 1)' "$1" "$2"; }

counter() { grep "counters:" "$1" | tail -1 | grep -o "$2=[0-9]*" | cut -d= -f2; }

DISK=$(mktemp -p /var/tmp aoe-e2e-trim.XXXXXX)
SHM=$(mktemp -p /dev/shm aoe-e2e-trim.XXXXXX)
trap 'rm -f "$DISK" "$SHM"; cleanup' EXIT

slot=1
# mode NAME IMAGE EXPECTED-ENGINE ARGS...
mode() {
    local name=$1 image=$2 engine=$3; shift 3
    truncate -s 0 "$image"; truncate -s $((SECTORS * 512)) "$image"
    start_target "$WORK/$name.log" "$@" 1 $slot t0 "$image"
    check "$name: served by $engine" grep -q "$engine" "$WORK/$name.log"
    check "$name: the serving line says TRIM" grep -q "read-write.*, TRIM, " "$WORK/$name.log"
    check "$name: IDENTIFY offers TRIM, reading zeros" \
        grep -qx "trim: yes, trimmed sectors read as zeros" <(aoectl identify -i i0 1.$slot)
    aoectl write -i i0 1.$slot --lba 0 --input "$WORK/pattern.bin"
    check "$name: pattern written" cmp -s "$image" "$WORK/pattern.bin"
    check "$name: discard 64 aligned sectors" aoectl discard -i i0 1.$slot --lba 128 --count 64
    check "$name: discard 3 sectors" aoectl discard -i i0 1.$slot --lba 7 --count 3
    # Before anything reads it: a read through a tmpfs image's mapping gives the hole its pages back.
    check "$name: the aligned range is a hole in the file" hole_at "$image" $((128 * 512))
    aoectl read -i i0 1.$slot --lba 0 --count $SECTORS --output "$WORK/$name.read"
    check "$name: read back: zeros where discarded, the pattern elsewhere" cmp -s "$WORK/$name.read" "$WORK/expected.bin"
    check "$name: the image file holds the same" cmp -s "$image" "$WORK/expected.bin"
    kill -USR1 "$TARGET_PID"; sleep 0.3
    check "$name: the target counted 2 TRIMs of 67 sectors" \
        test "$(counter "$WORK/$name.log" trims)/$(counter "$WORK/$name.log" sectors_trimmed)" = "2/67"
    stop_target
    slot=$((slot + 1))
}

mode ext4 "$DISK" "I/O via io_uring"
mode direct "$DISK" "I/O via io_uring" -d
mode sync "$DISK" "I/O via io_uring" -s
mode threads "$DISK" "I/O on 16 threads" --io-engine threads
mode tmpfs "$SHM" "I/O on the receive thread"

# The comparison above can fail: the pattern itself (what a target that ignored TRIM would leave) differs
# from what was expected.
if cmp -s "$WORK/pattern.bin" "$WORK/expected.bin"; then fail "control: an image left untouched would pass"; else
    pass "control: an image left untouched fails the comparison"; fi

# Refusals, each with a clear word and nothing discarded.
cp "$WORK/pattern.bin" "$DISK"
start_target "$WORK/notrim.log" --no-trim 1 8 t0 "$DISK"
check "--no-trim: IDENTIFY offers no TRIM on an image that could have holes" grep -qx "trim: no" <(aoectl identify -i i0 1.8)
check "--no-trim: the serving line does not say TRIM" bash -c "grep serving '$WORK/notrim.log' | grep -vq TRIM"
aoectl discard -i i0 1.8 --lba 0 --count 8 2>"$WORK/notrim.err"; rc=$?
check "--no-trim: aoectl discard fails (exit $rc) and says why" grep -q "does not support TRIM" "$WORK/notrim.err"
stop_target
check "--no-trim: the image is unchanged" cmp -s "$DISK" "$WORK/pattern.bin"
start_target "$WORK/ro.log" -r 1 9 t0 "$DISK"
check "read-only: IDENTIFY offers no TRIM" grep -qx "trim: no" <(aoectl identify -i i0 1.9)
aoectl discard -i i0 1.9 --lba 0 --count 8 2>"$WORK/ro.err"; rc=$?
check "read-only: aoectl discard fails (exit $rc)" test $rc -eq 1
check "read-only: it says why" grep -q "does not support TRIM" "$WORK/ro.err"
head -c 512 /dev/zero >"$WORK/unused-entries.bin"
out=$(aoectl ata -i i0 1.9 --command 0x06 --feature 1 --count 1 --lba48 --write-file "$WORK/unused-entries.bin" --json)
check "read-only: a raw DSM TRIM gets ABRT" test "$(echo "$out" | jq -c '[.status,.error]')" = "[81,4]"
stop_target
check "read-only: the image is unchanged" cmp -s "$DISK" "$WORK/pattern.bin"

start_target "$WORK/end.log" 1 10 t0 "$DISK"
aoectl discard -i i0 1.10 --lba $((SECTORS - 1)) --count 2 2>"$WORK/end.err"; rc=$?
check "past the end: aoectl discard fails (exit $rc) and says so" grep -q "reach past the end" "$WORK/end.err"
# A raw TRIM whose second entry reaches past the end: ABRT, and its first entry is not applied either.
python3 -c '
import struct, sys
sys.stdout.buffer.write(struct.pack("<QQ", 4 << 48 | 0, 2 << 48 | (2048 - 1)) + bytes(496))' >"$WORK/entries.bin"
out=$(aoectl ata -i i0 1.10 --command 0x06 --feature 1 --count 1 --lba48 --write-file "$WORK/entries.bin" --json)
check "past the end: a raw TRIM with one bad entry gets ABRT" test "$(echo "$out" | jq -c '[.status,.error]')" = "[81,4]"
stop_target
check "past the end: nothing was discarded" cmp -s "$DISK" "$WORK/pattern.bin"
finish
