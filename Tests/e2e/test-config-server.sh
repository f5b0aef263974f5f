#!/usr/bin/env bash
# One aoe-target process, three exports from a config file, two network segments:
#   segment A: bridge br0 with the target's t0 and the initiator's i0
#   segment B: bridge br1 with the target's t1 and the initiator's i1
#   e1.1 on t0 and t1 (one image, two NICs), e1.2 on t0 only, e1.3 on t1 only.
# Checks discovery per segment, aoeping (aoetools) against each export, a write on one NIC read back on the
# other, --check-config, SIGHUP adding and removing exports while aoectl bench --verify runs against a third,
# an invalid file on reload, and kill -9 right after mask / reserve / config-string replies.
. "$(dirname "$0")/lib.sh"
need_tool aoeping

ip netns add "$NS"
in_ns ip link set lo up
for seg in 0 1; do
    in_ns ip link add "br$seg" type bridge
    in_ns ip link set "br$seg" up
    for port in "t$seg" "i$seg"; do
        in_ns ip link add "$port" type veth peer name "${port}b"
        in_ns ip link set "${port}b" master "br$seg"
        in_ns ip link set "${port}b" up
        in_ns ip link set "$port" up
    done
done

for n in 1 2 3 4; do truncate -s 64M "$WORK/disk$n.img"; done
STATE=$WORK/state
CONF=$WORK/aoe.toml
write_config() { # write_config EXPORT_TABLES...
    { echo "state_dir = \"$STATE\""; echo 'log_level = "info"'; for t in "$@"; do echo; echo "$t"; done; } >"$CONF"
}
export_table() { # export_table SLOT INTERFACES-LIST [EXTRA-LINES]
    printf '[[export]]\nshelf = 1\nslot = %s\ninterfaces = %s\npath = "%s"\nbuffers = 32\n%s' "$1" "$2" "$WORK/disk$1.img" "${3:-}"
}
E1=$(export_table 1 '["t0", "t1"]')
E2=$(export_table 2 '["t0"]' 'sync = true')
E3=$(export_table 3 '["t1"]')
write_config "$E1" "$E2" "$E3"

# ---- --check-config: what would be served, with no socket opened
out=$(in_ns "$BIN/aoe-target" --check-config "$CONF" 2>&1)
check "--check-config accepts the file and names every export" \
    bash -c 'grep -q "^e1.1 on t0, t1: " <<<"$1" && grep -q "^e1.2 on t0: .*durable writes" <<<"$1" && grep -q "OK, 3 exports" <<<"$1"' _ "$out" ||
    echo "$out"
printf 'state_dir = "%s"\n\n%s\nsynk = true\n' "$STATE" "$E1" >"$WORK/bad.toml"
out=$("$BIN/aoe-target" --check-config "$WORK/bad.toml" 2>&1); rc=$?
check "--check-config: an unknown key is an error naming file, line and key (exit $rc)" \
    bash -c '[ "$2" = 1 ] && grep -q "bad.toml:9: .synk.: unknown key" <<<"$1"' _ "$out" "$rc"
out=$("$BIN/aoe-target" --check-config "$WORK/missing.toml" 2>&1); rc=$?
check "--check-config: a missing config file says so" bash -c '[ "$2" = 1 ] && grep -q "missing.toml: no such file" <<<"$1"' _ "$out" "$rc"
printf '%s\n' "$(export_table 9 '["t0"]')" | sed "s|disk9.img|nothing-here.img|" >"$WORK/nofile.toml"
out=$(in_ns "$BIN/aoe-target" --config "$WORK/nofile.toml" 2>&1); rc=$?
check "--config: a missing image stops the start with file, line and key" \
    bash -c '[ "$2" = 1 ] && grep -q "nofile.toml:5: .path.: .*nothing-here.img: no such file" <<<"$1"' _ "$out" "$rc"

# ---- serving
start_target "$WORK/server.log" --config "$CONF"
check "the server logs one serving line per export and NIC (4)" test "$(grep -c ': serving ' "$WORK/server.log")" = 4

listed() { aoectl discover -i "$1" --json | jq -r '[.targets[].target] | sort | join(" ")'; }
check "segment A (i0) sees e1.1 and e1.2" test "$(listed i0)" = "1.1 1.2"
check "segment B (i1) sees e1.1 and e1.3" test "$(listed i1)" = "1.1 1.3"
pinged() { in_ns timeout 10 aoeping -s 3 "$1" "$2" "$3" >/dev/null 2>&1; }
check "aoeping e1.1 on i0" pinged 1 1 i0
check "aoeping e1.1 on i1" pinged 1 1 i1
check "aoeping e1.2 on i0" pinged 1 2 i0
check "aoeping e1.3 on i1" pinged 1 3 i1
check "aoeping e1.3 on i0 gets no answer (not served on t0)" bash -c '! timeout 10 ip netns exec "$1" aoeping -s 2 1 3 i0 >/dev/null 2>&1' _ "$NS" 2>/dev/null

# A write through one NIC reads back through the other: one export, one device.
head -c 4096 /dev/urandom >"$WORK/pattern.bin"
aoectl write -i i0 1.1 --lba 777 --input "$WORK/pattern.bin" >/dev/null
aoectl read -i i1 1.1 --lba 777 --count 8 --output "$WORK/back.bin" >/dev/null
check "e1.1: written on i0 (t0), read back on i1 (t1)" cmp -s "$WORK/pattern.bin" "$WORK/back.bin"
# Negative control of that check: the same LBA of another export on segment B does not hold it.
aoectl read -i i1 1.3 --lba 777 --count 8 --output "$WORK/other.bin" >/dev/null
check "negative control: e1.3 at the same LBA does not hold e1.1's data" bash -c '! cmp -s "$1" "$2"' _ "$WORK/pattern.bin" "$WORK/other.bin"
check "the data is in e1.1's image at LBA 777" cmp -s "$WORK/pattern.bin" <(dd if="$WORK/disk1.img" bs=512 skip=777 count=8 status=none)
check "e1.1 is one target over both NICs (one request table), announced on each" \
    test "$(grep -c 'e1.1@t0,t1: serving' "$WORK/server.log")" = 2
# Verified load through both NICs of e1.1 at once, each initiator on its own half of the image.
aoectl bench -i i0 1.1 --rw randrw --qd 8 --count 1500 --region 0:16384 --verify --seed 11 --json >"$WORK/both-a.json" &
A=$!
aoectl bench -i i1 1.1 --rw randrw --qd 8 --count 1500 --region 16384:16384 --verify --seed 12 --json >"$WORK/both-b.json"
wait $A
check "e1.1 under verified load on both NICs at once: 0 errors, 0 mismatches on each" \
    bash -c 'for f in "$@"; do jq -e ".errors == 0 and .verify_mismatches == 0 and .verified_blocks > 0" "$f" >/dev/null || exit 1; done' _ "$WORK/both-a.json" "$WORK/both-b.json"

# ---- SIGHUP while e1.3 is under verified load: add e1.4, remove e1.2, e1.3 must not notice
aoectl bench -i i1 1.3 --rw randrw --bs 4k --qd 16 --duration 6 --verify --seed 7 --json >"$WORK/bench.json" 2>"$WORK/bench.err" &
BENCH=$!
sleep 2
E4=$(export_table 4 '["t0"]')
write_config "$E1" "$E3" "$E4"
kill -HUP "$TARGET_PID"
sleep 1
check "after reload, segment A sees e1.1 and e1.4 (e1.2 removed, e1.4 added)" test "$(listed i0)" = "1.1 1.4"
wait $BENCH
brc=$?
check "bench --verify on e1.3 across the reload: exit 0, 0 errors, 0 mismatches" \
    bash -c '[ "$1" = 0 ] && jq -e ".errors == 0 and .verify_mismatches == 0 and .ios > 100" "$2" >/dev/null' _ "$brc" "$WORK/bench.json" ||
    { cat "$WORK/bench.err"; jq -c . "$WORK/bench.json" | head -c 600; echo; }
check "the log says what the reload did" bash -c 'grep -q "reload: e1.2 removed" "$1" && grep -q "reload: e1.4 added" "$1"' _ "$WORK/server.log"
check "e1.3 was not restarted by the reload" test "$(grep -c 'e1.3@t1: serving' "$WORK/server.log")" = 1

# ---- SIGHUP that changes e1.3's buffers and sync while it is under verified load: applied while serving,
# no restart, no error; then read_only on and off again, also live.
buffers_of() { aoectl discover -i i1 --json | jq -r ".targets[] | select(.target == \"$1\") | .buffer_count"; }
aoectl bench -i i1 1.3 --rw randrw --bs 4k --qd 16 --duration 5 --verify --seed 8 --json >"$WORK/live.json" 2>"$WORK/live.err" &
BENCH=$!
sleep 1.5
write_config "$E1" "$(export_table 3 '["t1"]' | sed 's/^buffers = 32$/buffers = 48/'; echo 'sync = true')" "$E4"
kill -HUP "$TARGET_PID"
wait $BENCH
brc=$?
check "bench --verify on e1.3 across a live buffers + sync change: exit 0, 0 errors, 0 mismatches" \
    bash -c '[ "$1" = 0 ] && jq -e ".errors == 0 and .verify_mismatches == 0 and .ios > 100" "$2" >/dev/null' _ "$brc" "$WORK/live.json" ||
    { cat "$WORK/live.err"; jq -c . "$WORK/live.json" | head -c 600; echo; }
check "the log says sync and buffers were applied while serving" grep -q "reload: e1.3: sync, buffers applied while serving" "$WORK/server.log"
check "e1.3 was still not restarted" test "$(grep -c 'e1.3@t1: serving' "$WORK/server.log")" = 1
check "Query Config now says 48 buffers for e1.3" test "$(buffers_of 1.3)" = 48
check "IDENTIFY shows the write cache off (sync)" grep -q "write cache: supported, disabled" <(aoectl identify -i i1 1.3)
write_config "$E1" "$(export_table 3 '["t1"]' | sed 's/^buffers = 32$/buffers = 48/'; echo 'sync = true'; echo 'read_only = true')" "$E4"
kill -HUP "$TARGET_PID"; sleep 0.5
check "read_only applied while serving" grep -q "reload: e1.3: read_only applied while serving" "$WORK/server.log"
aoectl write -i i1 1.3 --lba 5 --input "$WORK/pattern.bin" 2>"$WORK/ro.err"; rc=$?
check "read_only: a write now fails with ABRT" bash -c '[ "$1" != 0 ] && grep -q ABRT "$2"' _ "$rc" "$WORK/ro.err"
check "read_only: reads still work" aoectl read -i i1 1.3 --lba 5 --count 1 --output "$WORK/ro.bin"
write_config "$E1" "$E3" "$E4"
kill -HUP "$TARGET_PID"; sleep 0.5
check "back to the first settings: writes work again" aoectl write -i i1 1.3 --lba 5 --input "$WORK/pattern.bin"
check "... and 32 buffers" test "$(buffers_of 1.3)" = 32
check "e1.3 was never restarted" test "$(grep -c 'e1.3@t1: serving' "$WORK/server.log")" = 1

# A change that needs a restart but names the same image (the model string) keeps the device open; a new path
# opens the new image. Data written before each restart is checked after it.
head -c 4096 /dev/urandom >"$WORK/e4.bin"
aoectl write -i i0 1.4 --lba 40 --input "$WORK/e4.bin"
write_config "$E1" "$E3" "$(printf '%s\nmodel = "renamed"\n' "$E4")"
kill -HUP "$TARGET_PID"; sleep 0.5
check "same image: restarted with its device kept open" grep -q "reload: e1.4 restarted with its new settings (its device kept open)" "$WORK/server.log"
check "same image: the new model is served" grep -q "renamed" <(aoectl identify -i i0 1.4)
aoectl read -i i0 1.4 --lba 40 --count 8 --output "$WORK/e4r.bin"
check "same image: what was written before reads back" cmp -s "$WORK/e4.bin" "$WORK/e4r.bin"
cp "$WORK/disk4.img" "$WORK/disk4b.img"
truncate -s 32M "$WORK/disk4b.img"
write_config "$E1" "$E3" "$(printf '%s\nmodel = "renamed"\n' "$E4" | sed "s|disk4.img|disk4b.img|")"
kill -HUP "$TARGET_PID"; sleep 0.5
check "new path: restarted, the device opened anew" bash -c 'grep "reload: e1.4 restarted" "$1" | tail -1 | grep -qv "kept open"' _ "$WORK/server.log"
check "new path: the new image is served (32 MiB)" grep -qx "sectors: 65536" <(aoectl identify -i i0 1.4)
check "no process-wide setting changed so far: no next-start warning" bash -c '! grep -q "take effect at the next start" "$1"' _ "$WORK/server.log"
{ cat "$CONF"; } | sed 's/^log_level = "info"$/log_level = "info"\npacket_ring = false/' >"$CONF.new" && mv "$CONF.new" "$CONF"
kill -HUP "$TARGET_PID"; sleep 0.5
check "a process-wide change (packet_ring) is logged as taking effect at the next start" \
    grep -q "reload: state_dir, log_level, pcap, pcap_limit, metrics and packet_ring take effect at the next start" "$WORK/server.log"
write_config "$E1" "$E3" "$E4"
kill -HUP "$TARGET_PID"; sleep 0.5

# An invalid file on reload changes nothing.
printf 'state_dir = "%s"\n[[export]]\nshelf = "one"\n' "$STATE" >"$CONF"
kill -HUP "$TARGET_PID"
sleep 1
check "an invalid file on reload is logged and changes nothing" \
    bash -c 'grep -q "reload: .*aoe.toml:3: .shelf.: must be an integer, not a string; nothing changed" "$1"' _ "$WORK/server.log"
check "after the failed reload segment A still sees e1.1 and e1.4" test "$(listed i0)" = "1.1 1.4"
# A reload whose new export cannot open (missing image) changes nothing either.
write_config "$E1" "$E3" "$E4" "$(export_table 5 '["t0"]' | sed "s|disk5.img|absent.img|")"
kill -HUP "$TARGET_PID"
sleep 1
check "a reload with a missing image changes nothing" bash -c 'grep -q "absent.img: no such file; nothing changed" "$1"' _ "$WORK/server.log"
check "still e1.1 and e1.4 on segment A" test "$(listed i0)" = "1.1 1.4"

# ---- persistent state: kill -9 right after each reply, restart, all three still in force
write_config "$E1" "$E3" "$E4"
kill -HUP "$TARGET_PID"; sleep 0.5
I0=$(mac_of i0); I1=$(mac_of i1)
aoectl mask -i i0 1.4 add "$I0" >/dev/null
aoectl reserve -i i1 1.3 set >/dev/null
aoectl config -i i0 1.1 set "rack-7" >/dev/null
kill -KILL "$TARGET_PID"; wait "$TARGET_PID" 2>/dev/null
start_target "$WORK/server2.log" --config "$CONF"
check "after kill -9 and restart: e1.4's mask still holds i0" \
    test "$(aoectl mask -i i0 1.4 --json | jq -r '.mask | join(",")')" = "$I0"
check "after kill -9 and restart: e1.3 still reserved by i1" \
    test "$(aoectl reserve -i i1 1.3 --json | jq -r '.reserved_by | join(",")')" = "$I1"
check "after kill -9 and restart: e1.1's config string is rack-7" \
    test "$(aoectl config -i i0 1.1 --json | jq -r '.config_string')" = "rack-7"
check "the restart logged the loaded state" grep -q "state loaded from $STATE/e1.4.state" "$WORK/server2.log"
# Negative control: an export nobody changed has no saved state and is open to everyone.
check "negative control: e1.1's mask is empty (nobody edited it)" test "$(aoectl mask -i i1 1.1 --json | jq -r '.mask | length')" = 0
stop_target
check "SIGTERM: the server logs counters per export on the way out" grep -q "stopped; counters: e1.3: " "$WORK/server2.log"
finish
