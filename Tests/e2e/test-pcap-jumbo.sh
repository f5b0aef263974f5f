#!/usr/bin/env bash
# --pcap writes every frame received and sent; tshark decodes them all as AoE with no malformed frame.
# At MTU 9000 the target advertises 17 sectors per frame and moves them.
. "$(dirname "$0")/lib.sh"
need_tool tshark
net_up 9000
truncate -s 32M "$WORK/disk.img"
start_target "$WORK/target.log" --pcap "$WORK/trace.pcap" 0 9 t0 "$WORK/disk.img"
check "MTU 9000: 17 sectors per frame" test "$(aoectl discover -i i0 --json | jq '.targets[0].sectors_per_frame')" = 17
aoectl identify -i i0 0.9 >/dev/null
# 8704 bytes = 17 sectors: one frame per I/O.
aoectl bench -i i0 0.9 --rw randrw --qd 4 --bs 8704 --count 200 --region 0:60000 --verify --json >"$WORK/b.json"
check "jumbo bench --verify clean" test "$(jq -c '[.verify_mismatches, .errors, (.verified_blocks > 0)]' "$WORK/b.json")" = "[0,0,true]"
aoectl ata -i i0 0.9 --command 0x24 --lba48 --count 17 --read-sectors 17 --json >"$WORK/r17.json"
check "one 17-sector read in one frame" test "$(jq '.data | length' "$WORK/r17.json")" = $((17 * 1024))
aoectl ata -i i0 0.9 --command 0x24 --lba48 --count 18 --json >"$WORK/r18.json" 2>&1
check "18 sectors is more than a frame: AoE error 2" grep -q "AoE error 2" "$WORK/r18.json"
stop_target
frames=$(tshark -r "$WORK/trace.pcap" 2>/dev/null | wc -l)
aoe=$(tshark -r "$WORK/trace.pcap" -Y aoe 2>/dev/null | wc -l)
malformed=$(tshark -r "$WORK/trace.pcap" -Y "_ws.malformed || _ws.expert.severity >= error" 2>/dev/null | wc -l)
check "pcap holds the traffic ($frames frames)" test "$frames" -gt 400
check "tshark decodes every frame as AoE ($aoe of $frames)" test "$aoe" -eq "$frames"
check "no malformed frames ($malformed)" test "$malformed" -eq 0
check "both directions recorded" test "$(tshark -r "$WORK/trace.pcap" -Y 'aoe.response == 1' 2>/dev/null | wc -l)" -gt 0 -a "$(tshark -r "$WORK/trace.pcap" -Y 'aoe.response == 0' 2>/dev/null | wc -l)" -gt 0
finish
