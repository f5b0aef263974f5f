#!/usr/bin/env bash
# Debian's aoetools (aoeping, aoecfg) against aoe-target, with no short-frame workaround: aoeping ignores
# replies shorter than 60 bytes, so this also proves replies are padded.
. "$(dirname "$0")/lib.sh"
need_tool aoeping aoecfg
net_up 1500
truncate -s 32M "$WORK/disk.img"
start_target "$WORK/target.log" --model "Interop Model" --serial "INTEROP-7" 5 3 t0 "$WORK/disk.img"
aoeping_() { in_ns timeout 10 aoeping -s 3 "$@"; }   # always an explicit interface inside the namespace

out=$(aoeping_ -v 5 3 i0)
check "aoeping -v: finds the target's MAC" grep -q "found e5.3 with mac $(mac_of t0 | tr -d :)" <<<"$out"
out=$(aoeping_ -I 5 3 i0)
check "aoeping -I: model" grep -q "model: Interop Model" <<<"$out"
check "aoeping -I: serial" grep -q "serial_number: INTEROP-7" <<<"$out"
out=$(aoeping_ -i 5 3 i0)
# IDENTIFY word 100 (bytes 200-201) holds the low 16 bits of 65536 sectors: 00 00, word 101: 01 00.
check "aoeping -i: 512-byte IDENTIFY dump" test "$(grep -cE '^([0-9a-f]{2} ){15}[0-9a-f]{2} ?$' <<<"$out")" -ge 32
check "aoeping -i: LBA48 capacity words" grep -q "00 00 01 00 00 00 00 00" <<<"$(sed -n '/identify/,$p' <<<"$out" | tail -n +14 | head -1)"

aoecfg_() { in_ns timeout 10 aoecfg -t 2 "$@"; }
aoecfg_ -c set -s "rack-9" 5 3 i0 >/dev/null
out=$(aoecfg_ -c read 5 3 i0)
check "aoecfg read shows the set string" grep -q "rack-9" <<<"$out"
out=$(aoecfg_ -c test -s "rack-9" 5 3 i0)
check "aoecfg test (match) answers" grep -q "rack-9" <<<"$out"
out=$(aoecfg_ -c test -s "rack" 5 3 i0)
check "aoecfg test (no match) gets no answer" test -z "$(grep rack <<<"$out")"
out=$(aoecfg_ -c prefix -s "rack" 5 3 i0)
check "aoecfg prefix answers" grep -q "rack-9" <<<"$out"
out=$(aoecfg_ -c fset -s "forced" 5 3 i0)
check "aoecfg fset replaces the string" grep -q "forced" <(aoecfg_ -c read 5 3 i0)
finish
