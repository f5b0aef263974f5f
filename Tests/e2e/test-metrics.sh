#!/usr/bin/env bash
# --metrics: the Prometheus endpoint. Scraped around an aoectl bench run, the I/O counters grow by the I/Os the
# client reports (plus at most its retransmits), the latency histogram's count agrees, bytes follow, a
# truncated frame shows as a drop by cause, and the text passes promtool. A second listener on the same
# address is refused with a clear error, before anything is served.
. "$(dirname "$0")/lib.sh"
need_tool curl promtool perl
net_up 1500
IMG=$(mktemp -p /dev/shm aoe-e2e-metrics.XXXXXX)
truncate -s 64M "$IMG"
PORT=$((20000 + $$ % 20000))
URL="http://127.0.0.1:$PORT/metrics"
start_target "$WORK/t.log" --metrics "127.0.0.1:$PORT" 1 1 t0 "$IMG"
check "the start-up log says where the metrics are" grep -q "metrics at http://127.0.0.1:$PORT/metrics" "$WORK/t.log"

scrape() { in_ns curl -sf --max-time 5 "$URL"; }
# value FILE METRIC LABELS: the sample's value (0 when absent).
value() { awk -v m="$2{$3}" '$1 == m { v = $2 } END { print v + 0 }' "$1"; }
L='shelf="1",slot="1"'

scrape >"$WORK/m0.txt"
check "scrape answers before any I/O" grep -q '^aoe_target_exports 1' "$WORK/m0.txt"
check "promtool accepts the text" in_ns sh -c "promtool check metrics < $WORK/m0.txt"

# 1 KiB reads: one frame, so one AoE request, per I/O at MTU 1500.
aoectl bench -i i0 1.1 --rw randread --bs 1k --qd 8 --count 3000 --seed 11 --json >"$WORK/r.json"
aoectl bench -i i0 1.1 --rw randwrite --bs 1k --qd 8 --count 2000 --seed 12 --json >"$WORK/w.json"
scrape >"$WORK/m1.txt"
for op in read write; do
    f=$WORK/$( [ $op = read ] && echo r || echo w ).json
    ios=$(jq .ios "$f") retx=$(jq .retransmits "$f")
    before=$(value "$WORK/m0.txt" aoe_target_ios_total "$L,op=\"$op\"")
    after=$(value "$WORK/m1.txt" aoe_target_ios_total "$L,op=\"$op\"")
    delta=$((after - before))
    check "$op: aoe_target_ios_total grew by the client's $ios I/Os (+ at most $retx retransmits): $delta" \
        test "$delta" -ge "$ios" -a "$delta" -le $((ios + retx))
    count=$(value "$WORK/m1.txt" aoe_target_request_duration_seconds_count "$L,op=\"$op\"")
    check "$op: the latency histogram counted every answer ($count = $after)" test "$count" = "$after"
    inf=$(value "$WORK/m1.txt" aoe_target_request_duration_seconds_bucket "$L,op=\"$op\",le=\"+Inf\"")
    check "$op: the +Inf bucket is the count" test "$inf" = "$count"
    bytes=$(value "$WORK/m1.txt" aoe_target_bytes_total "$L,op=\"$op\"")
    check "$op: aoe_target_bytes_total is 1 KiB per answer ($bytes)" test "$bytes" -eq $((after * 1024))
done
fast=$(value "$WORK/m1.txt" aoe_target_request_duration_seconds_bucket "$L,op=\"read\",le=\"0.01\"")
total=$(value "$WORK/m1.txt" aoe_target_request_duration_seconds_count "$L,op=\"read\"")
check "reads: most finish within 10 ms on tmpfs ($fast of $total)" test $((fast * 2)) -gt "$total"
check "promtool accepts the text under load" in_ns sh -c "promtool check metrics < $WORK/m1.txt"

# A frame cut short after the shelf.slot (20 bytes: no tag) passes the kernel filter and is dropped as truncated.
dst=$(mac_of t0) src=$(mac_of i0)
ifindex=$(in_ns cat /sys/class/net/i0/ifindex)
# perl (perl-base, on every Debian) sends one raw frame: AF_PACKET 17, SOCK_RAW 3, ETH_P_ALL 0x0300 (network order).
in_ns perl -MSocket -e '
    socket(my $s, 17, 3, 0x0300) or die "socket: $!";
    my $to = pack("S n i S C C a8", 17, 0x88A2, '"$ifindex"', 0, 0, 0, "");
    my ($dst, $src) = map { pack("H12", s/://gr) } @ARGV;
    send($s, $dst . $src . "\x88\xa2" . pack("C6", 0x10, 0, 0, 1, 1, 0), 0, $to) or die "send: $!";
' "$dst" "$src"
sleep 0.3
scrape >"$WORK/m2.txt"
check "a truncated frame shows as a drop by cause" \
    test "$(value "$WORK/m2.txt" aoe_target_frames_dropped_total "$L,cause=\"truncated\"")" -eq $(( $(value "$WORK/m1.txt" aoe_target_frames_dropped_total "$L,cause=\"truncated\"") + 1 ))
check "another path is 404" test "$(in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/")" = 404

# Negative control: the counter check above must fail against a scrape taken before the I/O.
ios=$(jq .ios "$WORK/r.json")
stale=$(( $(value "$WORK/m0.txt" aoe_target_ios_total "$L,op=\"read\"") - $(value "$WORK/m0.txt" aoe_target_ios_total "$L,op=\"read\"") ))
check "negative control: a stale scrape does not pass the I/O check" test "$stale" -lt "$ios"

# The same address again: refused before serving, naming the address and why.
out=$(in_ns timeout 10 "$BIN/aoe-target" --metrics "127.0.0.1:$PORT" 1 2 t0 null:1G 2>&1); rc=$?
check "a second listener on the address is refused (exit $rc)" test $rc -ne 0
check "... with a clear error" grep -q "metrics: cannot listen on 127.0.0.1:$PORT: address already in use" <<<"$out"
out=$(in_ns timeout 10 "$BIN/aoe-target" --metrics "127.0.0.1" 1 2 t0 null:1G 2>&1)
check "--metrics without a port is a clear error" grep -q "give HOST:PORT" <<<"$out"
stop_target
rm -f "$IMG"
finish
