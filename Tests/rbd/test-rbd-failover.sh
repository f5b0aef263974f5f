#!/usr/bin/env bash
# Active/passive failover of one RBD image between two aoe-target processes on one bridge (ports t0 and t1),
# with aoectl as the initiator on i0:
# - the standby sends no reply for the export while the active one lives (capture on its port);
# - kill -9 of the active under bench --verify: the standby takes over, aoectl follows it, 0 errors and
#   0 mismatches; the failover time is printed (last reply from the old host to first from the new);
# - fencing: the active host frozen (SIGSTOP) until the other took over, then let run again (SIGCONT): it
#   sends nothing more for the export, and none of the writes it had queued lands (the region holds the
#   pattern written after the takeover; the pattern of before is shown not to be there, as a control).
. "$(dirname "$0")/../e2e/lib.sh"
. "$ROOT/Tests/rbd/ceph-cluster.sh"
need_tool tcpdump
lacks() { ! grep -q "$1" "$2"; }
need_tool ceph-mon ceph-osd ceph-mgr monmaptool ceph rbd
trap 'ceph_stop; cleanup' EXIT
net_up 1500
in_ns ip link add t1 type veth peer name t1b
in_ns ip link set t1b master br0
in_ns ip link set t1b up
in_ns ip link set t1 up
ceph_start "$WORK/ceph" "$NS" || skip "the one-node Ceph cluster did not start (see above)"
ceph_image_create img 128M || { fail "rbd create"; finish; }
MAC_T0=$(mac_of t0) MAC_T1=$(mac_of t1)

# start_standby LOG ARGS...: a target expected to stand by; waits for it to say so.
start_standby() {
    local log=$1; shift
    ip netns exec "$NS" "$BIN/aoe-target" "$@" >"$log" 2>&1 &
    PIDS+=($!)
    STANDBY_PID=$!
    for _ in $(seq 100); do grep -q "standing by" "$log" && return 0; sleep 0.1; done
    return 1
}
# replies_from PCAP MAC: AoE responses (R flag) sent by MAC in the capture.
replies_from() { in_ns tcpdump -r "$1" -nn "ether src $2 and ether proto 0x88a2 and ether[14] & 0x08 != 0" 2>/dev/null | wc -l; }
capture() { # capture IF FILE: starts tcpdump on IF; CAPTURE_PID
    # ip netns exec execs tcpdump, so $! is its PID.
    ip netns exec "$NS" tcpdump -i "$1" -w "$2" -s 128 -U "ether proto 0x88a2" 2>/dev/null &
    CAPTURE_PID=$!
    PIDS+=($CAPTURE_PID)
    sleep 1
}
stop_capture() { kill -INT "$CAPTURE_PID"; wait "$CAPTURE_PID" 2>/dev/null; }

start_target "$WORK/a.log" --failover -b 64 1 1 t0 rbd:rbd/img
A_PID=$TARGET_PID
check "the first host is active" grep -q "serving rbd:rbd/img" "$WORK/a.log"
check "the second host stands by" start_standby "$WORK/b.log" --failover -b 64 1 1 t1 rbd:rbd/img
B_PID=$STANDBY_PID
capture t1 "$WORK/standby.pcap"
aoectl bench -i i0 1.1 --rw randrw --qd 16 --bs 4k --count 3000 --region 0:32768 --verify --seed 5 --json >"$WORK/v.json"
check "bench --verify through the active host: 0 mismatches, 0 errors" test "$(jq -c '[.verify_mismatches, .errors]' "$WORK/v.json")" = "[0,0]"
check "discover sees exactly one host for e1.1 ($(aoectl discover -i i0 | grep -c 1.1))" test "$(aoectl discover -i i0 | grep -c '1\.1')" -eq 1
sleep $((4))   # more than the standby's takeover timeout: it keeps probing and must not take over
stop_capture
check "the standby sent 0 replies for the export while the active lived ($(replies_from "$WORK/standby.pcap" "$MAC_T1"))" \
    test "$(replies_from "$WORK/standby.pcap" "$MAC_T1")" -eq 0
check "the standby probed the active host (Query Config requests seen)" \
    test "$(in_ns tcpdump -r "$WORK/standby.pcap" -nn "ether src $MAC_T1 and ether[14] & 0x08 = 0" 2>/dev/null | wc -l)" -gt 0
check "the standby did not take over from a live host" lacks "took over" "$WORK/b.log"

# Failover under write load. The region is first written whole with the seed's pattern, so that the
# read-back after the failover can ask every block for it (random writes alone need not reach each block).
aoectl bench -i i0 1.1 --rw write --qd 16 --bs 4k --count 4096 --region 0:32768 --verify --seed 21 --json >"$WORK/fill.json"
check "the region written whole before the failover" test "$(jq -c '[.errors, .verify_mismatches]' "$WORK/fill.json")" = "[0,0]"
capture i0 "$WORK/initiator.pcap"
aoectl bench -i i0 1.1 --rw randwrite --qd 16 --bs 4k --duration 14 --region 0:32768 --verify --seed 21 --json >"$WORK/fo.json" &
bench=$!
sleep 3
kill -KILL "$A_PID"
wait "$bench"; rc=$?
stop_capture
check "bench across the failover: exit 0, 0 errors, 0 mismatches, moved once to the standby's MAC" \
    test $rc -eq 0 -a "$(jq -c '[.errors, .verify_mismatches, .failovers, .target_mac]' "$WORK/fo.json")" = "[0,0,1,\"$MAC_T1\"]"
grep "took over" "$WORK/b.log" | sed 's/^/  /'
check "the standby took over" grep -q "took over e1.1" "$WORK/b.log"
last_old=$(in_ns tcpdump -r "$WORK/initiator.pcap" -nn -tt "ether src $MAC_T0 and ether[14] & 0x08 != 0" 2>/dev/null | tail -1 | cut -d' ' -f1)
first_new=$(in_ns tcpdump -r "$WORK/initiator.pcap" -nn -tt "ether src $MAC_T1 and ether[14] & 0x08 != 0 and ether[19] = 0" 2>/dev/null | head -1 | cut -d' ' -f1)
failover=$(awk -v a="$last_old" -v b="$first_new" 'BEGIN { printf "%.2f", b - a }')
echo "failover time: ${failover} s (last reply from $MAC_T0 at $last_old, first ATA reply from $MAC_T1 at $first_new)"
check "failover within 10 s (${failover} s)" awk -v t="$failover" 'BEGIN { exit !(t > 0 && t < 10) }'
aoectl bench -i i0 1.1 --rw read --qd 16 --bs 4k --count 4096 --region 0:32768 --verify-existing --seed 21 --json >"$WORK/after.json"
check "through the new host every block holds an acknowledged write ($(jq -c '[.verified_blocks, .first_mismatch, .first_error]' "$WORK/after.json"))" \
    test "$(jq -c '[.verify_mismatches, .errors, .verified_blocks]' "$WORK/after.json")" = "[0,0,4096]"

# Fencing: the old host comes back as standby; the active one (B) is frozen until A took over.
check "the restarted first host stands by" start_standby "$WORK/a2.log" --failover -b 64 1 1 t0 rbd:rbd/img
A_PID=$STANDBY_PID
aoectl bench -i i0 1.1 --rw write --qd 16 --bs 4k --duration 12 --region 0:32768 --verify --seed 31 --json >"$WORK/frozen.json" &
bench=$!
sleep 2
kill -STOP "$B_PID"
for _ in $(seq 100); do grep -q "took over" "$WORK/a2.log" && break; sleep 0.1; done
check "the standby took over from the frozen host" grep -q "took over e1.1" "$WORK/a2.log"
wait "$bench"
check "bench across the freeze: 0 errors, 0 mismatches" test "$(jq -c '[.errors, .verify_mismatches, .target_mac]' "$WORK/frozen.json")" = "[0,0,\"$MAC_T0\"]"
# A pattern of its own over the whole region, written after the takeover.
aoectl bench -i i0 1.1 --rw write --qd 16 --bs 4k --count 8192 --region 0:32768 --verify --seed 32 --json >"$WORK/after-takeover.json"
check "the post-takeover pattern written: all 4096 blocks (twice over)" test "$(jq -c '[.errors, .verify_mismatches]' "$WORK/after-takeover.json")" = "[0,0]"
capture t1 "$WORK/fenced.pcap"
kill -CONT "$B_PID"
for _ in $(seq 50); do grep -q "fenced" "$WORK/b.log" && break; sleep 0.1; done
sleep 3
stop_capture
grep "fenced" "$WORK/b.log" | head -1 | sed 's/^/  /'
check "the thawed host fenced itself" grep -q "fenced" "$WORK/b.log"
check "the thawed host sent 0 replies for the export ($(replies_from "$WORK/fenced.pcap" "$MAC_T1"))" test "$(replies_from "$WORK/fenced.pcap" "$MAC_T1")" -eq 0
aoectl bench -i i0 1.1 --rw read --qd 16 --bs 4k --count 8192 --region 0:32768 --verify-existing --seed 32 --json >"$WORK/final.json"
check "none of the frozen host's queued writes landed: the region holds the post-takeover pattern" \
    test "$(jq -c '[.verify_mismatches, .errors, (.verified_blocks > 0)]' "$WORK/final.json")" = "[0,0,true]"
aoectl bench -i i0 1.1 --rw read --qd 16 --bs 4k --count 1024 --region 0:32768 --verify-existing --seed 31 --json >"$WORK/control.json"
check "negative control: the pre-takeover pattern is not found" test "$(jq .verify_mismatches "$WORK/control.json")" -gt 0
finish
