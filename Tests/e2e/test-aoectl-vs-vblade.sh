#!/usr/bin/env bash
# aoectl against Debian's vblade (the reference target nobody here wrote) and against aoe-target on the
# same kind of image: the same answers where vblade implements the command, and bench --verify clean on both.
. "$(dirname "$0")/lib.sh"
need_tool vblade
net_up 1500
truncate -s 32M "$WORK/vblade.img" "$WORK/ours.img"
printf 'HELLO-AOE' | tee >(dd of="$WORK/vblade.img" bs=512 seek=5 conv=notrunc status=none) | dd of="$WORK/ours.img" bs=512 seek=5 conv=notrunc status=none
sleep 0.2
TARGET_CMD=vblade start_target "$WORK/vblade.log" 1 1 t0 "$WORK/vblade.img"
VBLADE_PID=$TARGET_PID
start_target "$WORK/ours.log" 2 1 t0 "$WORK/ours.img"

json=$(aoectl discover -i i0 --json)
check "discover lists both targets" test "$(echo "$json" | jq -r '[.targets[].target] | join(" ")')" = "1.1 2.1"
for t in 1.1 2.1; do
    check "e$t: identify size" grep -qx "sectors: 65536" <(aoectl identify -i i0 $t)
    aoectl read -i i0 $t --lba 5 --count 1 --output "$WORK/r$t.bin"
    check "e$t: seeded sector reads back" grep -q HELLO-AOE "$WORK/r$t.bin"
    out=$(aoectl ata -i i0 $t --command 0xE5 --json)
    check "e$t: CHECK POWER MODE count 0xFF, DRDY" test "$(echo "$out" | jq -c '[.status, .count]')" = "[64,255]"
    out=$(aoectl ata -i i0 $t --command 0x20 --count 1 --lba 65536 --read-sectors 1 --json)
    # vblade reports status 0x41, aoe-target 0x51 (DRDY|DSC|ERR, as drives do): both ERR with IDNF.
    check "e$t: read past the end: ERR with IDNF" test "$(echo "$out" | jq -c '[.status % 2, .error]')" = "[1,16]"
    out=$(aoectl ata -i i0 $t --command 0xB0 --feature 0xDA --lba 0xC24F00 --json)
    check "e$t: unsupported command (SMART on an image): ABRT" test "$(echo "$out" | jq -c '.error')" = 4
    check "e$t: config set/read" test "$(aoectl config -i i0 $t set "cfg-$t" --json | jq -r .config_string)" = "cfg-$t"
    check "e$t: mask read (empty)" test "$(aoectl mask -i i0 $t read --json | jq -r '.mask | length')" = 0
    check "e$t: reserve read (empty)" test "$(aoectl reserve -i i0 $t read --json | jq -r '.reserved_by | length')" = 0
    aoectl bench -i i0 $t --rw randrw --qd 8 --bs 4k --count 2000 --verify --seed 7 --json >"$WORK/bench$t.json"
    check "e$t: bench --verify: no mismatches, blocks verified, no errors" \
        test "$(jq -c '[.verify_mismatches, (.verified_blocks > 0), .errors]' "$WORK/bench$t.json")" = "[0,true,0]"
    echo "e$t bench: $(jq -c '{iops: (.iops|floor), p99: .latency_us.p99, retransmits}' "$WORK/bench$t.json")"
done
# aoectl's IDENTIFY decoding of vblade's page: vblade's own strings.
check "vblade's model decoded" grep -q "model: Coraid EtherDrive vblade" <(aoectl identify -i i0 1.1)
finish
