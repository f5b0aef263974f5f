#!/usr/bin/env bash
# bench --verify against aoe-target, then the same data through a deliberately wrong target (the image
# exported 4 sectors shifted): verification must fail there, so the check is shown able to fail.
# Then 5 % of AoE frames dropped by nftables on the bridge: bench --verify still finds 0 mismatches and
# reports its retransmits.
. "$(dirname "$0")/lib.sh"
need_tool nft
net_up 1500
IMG=$WORK/disk.img
truncate -s 64M "$IMG"
start_target "$WORK/t1.log" -b 64 1 1 t0 "$IMG"
# A sequential pass writes each of the 2048 8k blocks of the region once, then random writes overwrite some of them.
aoectl bench -i i0 1.1 --rw write --qd 16 --bs 8k --count 2048 --region 0:32768 --verify --seed 42 --json >"$WORK/seq.json"
check "write --verify: 0 mismatches, all 2048 blocks verified" test "$(jq -c '[.verify_mismatches, .verified_blocks, .errors]' "$WORK/seq.json")" = "[0,2048,0]"
aoectl bench -i i0 1.1 --rw randwrite --qd 16 --bs 8k --count 3000 --region 0:32768 --verify --seed 42 --json >"$WORK/w.json"
check "randwrite --verify: 0 mismatches, verified blocks > 0" test "$(jq -c '[.verify_mismatches, (.verified_blocks > 0), .errors]' "$WORK/w.json")" = "[0,true,0]"
aoectl bench -i i0 1.1 --rw read --qd 8 --bs 8k --count 2000 --region 0:32768 --verify-existing --seed 42 --json >"$WORK/r.json"
check "existing pattern verifies through the right target" test "$(jq -c '[.verify_mismatches, (.verified_blocks > 0)]' "$WORK/r.json")" = "[0,true]"
stop_target

start_target "$WORK/t2.log" -o 4 1 1 t0 "$IMG"
aoectl bench -i i0 1.1 --rw read --qd 8 --bs 8k --count 500 --region 0:32760 --verify-existing --seed 42 --json >"$WORK/shifted.json"; rc=$?
check "shifted target: bench exits non-zero" test $rc -ne 0
check "shifted target: mismatches reported" test "$(jq .verify_mismatches "$WORK/shifted.json")" -gt 0
echo "shifted target: $(jq -r .first_mismatch "$WORK/shifted.json")"
stop_target

start_target "$WORK/t3.log" -b 64 1 1 t0 "$IMG"
in_ns nft add table bridge lossy
in_ns nft add chain bridge lossy aoe_forward '{ type filter hook forward priority 0; }'
in_ns nft add rule bridge lossy aoe_forward ether type 0x88a2 numgen random mod 100 '<' 5 counter drop
aoectl bench -i i0 1.1 --rw randrw --qd 16 --bs 4k --count 3000 --region 0:32768 --verify --seed 9 --json >"$WORK/loss.json"
dropped=$(in_ns nft list chain bridge lossy aoe_forward | grep -o 'packets [0-9]*' | awk '{print $2}')
check "5 % loss: 0 mismatches, 0 errors, blocks verified" test "$(jq -c '[.verify_mismatches, .errors, (.verified_blocks > 0)]' "$WORK/loss.json")" = "[0,0,true]"
retx=$(jq .retransmits "$WORK/loss.json")
check "5 % loss: retransmits reported and at most twice the frames dropped ($retx retransmits, $dropped frames dropped)" \
    test "$retx" -gt 0 -a "$retx" -le $((2 * dropped))
# The timeout comes from the measured round trip (a LAN's: well under a millisecond), not from a 200 ms floor;
# rto_ms itself is the value at the end of the run, which Karn's backoff may have raised for a moment.
check "5 % loss: the round trip the timeout is derived from is a LAN's (srtt $(jq .srtt_ms "$WORK/loss.json") ms, rto now $(jq .rto_ms "$WORK/loss.json") ms)" \
    jq -e '.srtt_ms < 20' "$WORK/loss.json" >/dev/null
finish
