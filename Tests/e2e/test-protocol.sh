#!/usr/bin/env bash
# aoe-target over a veth bridge, driven by aoectl: Query Config, IDENTIFY, first/last sector I/O, IDNF past
# the end, config-string CCmds, MAC mask and reservation enforcement, FLUSH reaching fdatasync.
. "$(dirname "$0")/lib.sh"
net_up 1500
IMG=$WORK/disk.img
truncate -s 64M "$IMG"
SECTORS=131072
start_target "$WORK/target.log" -b 16 --model "E2E Model" --serial "E2E-SERIAL-1" 3 7 t0 "$IMG"

json=$(aoectl discover -i i0 --json)
check "discover finds e3.7 with buffer count 16, 2 sectors/frame, size" \
    test "$(echo "$json" | jq -r '.targets[0] | "\(.target) \(.buffer_count) \(.sectors_per_frame) \(.sectors)"')" = "3.7 16 2 $SECTORS"
check "discover reports the target's MAC" test "$(echo "$json" | jq -r '.targets[0].mac')" = "$(mac_of t0)"

id=$(aoectl identify -i i0 3.7)
check "identify: sectors in decimal" grep -qx "sectors: $SECTORS" <<<"$id"
check "identify: model verbatim" grep -qx "model: E2E Model" <<<"$id"
check "identify: serial verbatim" grep -qx "serial: E2E-SERIAL-1" <<<"$id"
check "identify: write cache and flush advertised" grep -q "write cache: supported, enabled" <<<"$id"

head -c 1024 /dev/urandom >"$WORK/first.bin"
head -c 1024 /dev/urandom >"$WORK/last.bin"
aoectl write -i i0 3.7 --lba 0 --input "$WORK/first.bin"
aoectl write -i i0 3.7 --lba $((SECTORS - 2)) --input "$WORK/last.bin"
aoectl read -i i0 3.7 --lba 0 --count 2 --output "$WORK/first.back"
aoectl read -i i0 3.7 --lba $((SECTORS - 2)) --count 2 --output "$WORK/last.back"
check "first two sectors read back" cmp -s "$WORK/first.bin" "$WORK/first.back"
check "last two sectors read back" cmp -s "$WORK/last.bin" "$WORK/last.back"
check "first sectors are at byte 0 of the image" cmp -s "$WORK/first.bin" <(head -c 1024 "$IMG")
check "last sectors are at the end of the image" cmp -s "$WORK/last.bin" <(tail -c 1024 "$IMG")

# READ SECTORS EXT one sector past the end: status 0x51, error 0x10 (IDNF); aoectl ata exits non-zero.
out=$(aoectl ata -i i0 3.7 --command 0x24 --lba48 --count 1 --lba $SECTORS --read-sectors 1 --json); rc=$?
check "read past the end: exit status says ATA error" test $rc -ne 0
check "read past the end: status 0x51 error 0x10" test "$(echo "$out" | jq -c '[.status, .error]')" = "[81,16]"
out=$(aoectl ata -i i0 3.7 --command 0x24 --lba48 --count 1 --lba $((SECTORS - 1)) --read-sectors 1 --json)
check "read of the last sector succeeds" test "$(echo "$out" | jq .status)" = 64
out=$(aoectl ata -i i0 3.7 --command 0xF1 --json)
check "unknown opcode: ABRT" test "$(echo "$out" | jq -c '[.status, .error]')" = "[81,4]"

# Config string: set, set of a different string (error 4), test / prefix silent unless they match.
check "config set" test "$(aoectl config -i i0 3.7 set rack1 --json | jq -r .config_string)" = rack1
aoectl config -i i0 3.7 set other >"$WORK/cfg.out" 2>&1
check "config set of a different string: AoE error 4" grep -q "AoE error 4" "$WORK/cfg.out"
check "config test exact match answers" aoectl config -i i0 3.7 test rack1
aoectl config -i i0 3.7 test rack --timeout 0.5 >/dev/null; rc=$?
check "config test without a match stays silent" test $rc -eq 3
check "config prefix answers" aoectl config -i i0 3.7 prefix rack
check "config force-set" test "$(aoectl config -i i0 3.7 force-set rack2 --json | jq -r .config_string)" = rack2

# MAC mask: only i0 may talk; i1 is ignored; deleting the last entry opens the target again.
I0=$(mac_of i0); I1=$(mac_of i1)
check "mask add i0" test "$(aoectl mask -i i0 3.7 add "$I0" --json | jq -r '.mask | join(",")')" = "$I0"
aoectl identify -i i1 3.7 --timeout 0.5 >/dev/null 2>&1; rc=$?
check "masked-out host gets no answer" test $rc -ne 0
check "listed host still served" aoectl identify -i i0 3.7 >/dev/null
check "deleting the last mask entry" test "$(aoectl mask -i i0 3.7 delete "$I0" --json | jq -r '.mask | length')" = 0
check "other host served again" aoectl identify -i i1 3.7 >/dev/null

# Reservation: i0 reserves; i1 may IDENTIFY but not read; release.
check "reserve set by i0" test "$(aoectl reserve -i i0 3.7 set --json | jq -r '.reserved_by[0]')" = "$I0"
check "reserved: other host still gets IDENTIFY" aoectl identify -i i1 3.7 >/dev/null
aoectl read -i i1 3.7 --lba 0 --count 1 --output /dev/null 2>"$WORK/res.err"; rc=$?
check "reserved: other host's read refused" test $rc -ne 0
check "reserved: error names the reservation" grep -q "reserved by another host" "$WORK/res.err"
check "reservation holder can read" aoectl read -i i0 3.7 --lba 0 --count 1 --output /dev/null
check "release" test "$(aoectl reserve -i i0 3.7 release --json | jq -r '.reserved_by | length')" = 0
check "after release other host reads" aoectl read -i i1 3.7 --lba 0 --count 1 --output /dev/null

# FLUSH CACHE EXT reaches fdatasync: the syscall layer's counter, reported on SIGUSR1.
counter() { kill -USR1 $TARGET_PID; sleep 0.3; grep "counters:" "$WORK/target.log" | tail -1 | grep -o 'fdatasync_calls=[0-9]*' | cut -d= -f2; }
before=$(counter); before=${before:-0}
aoectl ata -i i0 3.7 --command 0xEA --lba48 >/dev/null
aoectl ata -i i0 3.7 --command 0xE7 >/dev/null
after=$(counter)
check "two FLUSH commands made two fdatasync calls ($before -> $after)" test "$after" -eq $((before + 2))
check "SIGTERM: clean exit" stop_target
check "exit logs counters" grep -q "stopped; counters:" "$WORK/target.log"
finish
