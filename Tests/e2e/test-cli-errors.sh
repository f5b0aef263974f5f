#!/usr/bin/env bash
# aoe-target refuses bad input with one clear line and a non-zero exit, before touching the network.
. "$(dirname "$0")/lib.sh"
net_up 1500
truncate -s 1M "$WORK/small.img"

expect_error() { # DESCRIPTION PATTERN ARGS...
    local what=$1 pattern=$2; shift 2
    local out rc
    out=$(in_ns timeout 10 "$BIN/aoe-target" "$@" 2>&1); rc=$?
    if [ $rc -ne 0 ] && grep -qi -- "$pattern" <<<"$out"; then pass "$what"; else fail "$what (exit $rc: $out)"; fi
}
expect_error "unknown interface" "no such network interface" 0 1 nosuch0 "$WORK/small.img"
in_ns ip link set i1 down
expect_error "interface down" "interface is down" 0 1 i1 "$WORK/small.img"
expect_error "missing file" "no such file" 0 1 t0 "$WORK/missing.img"
expect_error "shelf out of range" "shelf 65535 is out of range" 65535 1 t0 "$WORK/small.img"
expect_error "slot out of range" "slot 255 is out of range" 0 255 t0 "$WORK/small.img"
expect_error "buffer count out of range" "buffer count 1" -b 1 0 1 t0 "$WORK/small.img"
expect_error "image smaller than the window" "image too small" -o 1000 -l 2000 0 1 t0 "$WORK/small.img"
expect_error "bad MAC in mask" "not a MAC address" -m 00:11:22 0 1 t0 "$WORK/small.img"
expect_error "character device refused" "not a regular file or block device" 0 1 t0 /dev/null
many=$(for i in $(seq 0 299); do printf '02:00:00:00:%02x:%02x,' $((i / 256)) $((i % 256)); done)
expect_error "a mask list longer than the protocol's list" "has 300 entries; at most 128" -m "${many%,}" 0 1 t0 "$WORK/small.img"
expect_error "null device too large for 64 bits" "give the null device a size" 0 1 t0 null:20000000T
expect_error "--pcap-limit without --pcap" "needs --pcap" --pcap-limit 1M 0 1 t0 "$WORK/small.img"
expect_error "--config with export options" "goes in the file" --config "$WORK/small.img" -s
expect_error "positionals and --config together" "not both" --config "$WORK/x.toml" 0 1 t0 "$WORK/small.img"
: >"$WORK/empty.img"
expect_error "zero-length image" "image is empty" 0 1 t0 "$WORK/empty.img"
if command -v setpriv >/dev/null; then
    out=$(in_ns setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$BIN/aoe-target" 0 1 t0 "$WORK/small.img" 2>&1); rc=$?
    if [ $rc -ne 0 ] && grep -q "CAP_NET_RAW" <<<"$out"; then pass "not root: clear error"; else fail "not root (exit $rc: $out)"; fi
fi

# aoectl attach: its checks come before any frame is sent.
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$BIN/aoectl" attach -i t0 1.1 2>&1); rc=$?
if [ $rc = 1 ] && grep -q "must run as root" <<<"$out"; then pass "aoectl attach not as root: clear error"; else fail "aoectl attach not as root (exit $rc: $out)"; fi
out=$("$BIN/aoectl" attach -i t0 1.1 --max-sectors 3 2>&1); rc=$?
if [ $rc = 1 ] && grep -q -- "--max-sectors must be" <<<"$out"; then pass "aoectl attach --max-sectors out of range: clear error"; else fail "aoectl attach --max-sectors 3 (exit $rc: $out)"; fi
if [ ! -d /sys/module/target_core_user ]; then   # this host's kernel (no TCMU); the guest test covers the rest
    out=$("$BIN/aoectl" attach -i t0 1.1 2>&1); rc=$?
    if [ $rc = 1 ] && grep -qE "configfs is not mounted|kernel module (target_core_mod|target_core_user|tcm_loop) is not loaded" <<<"$out"; then
        pass "aoectl attach without TCMU: $out"
    else
        fail "aoectl attach without TCMU (exit $rc: $out)"
    fi
fi
out=$("$BIN/aoectl" detach 1.1 2>&1); rc=$?
if [ $rc = 1 ] && grep -q "not attached" <<<"$out"; then pass "aoectl detach of nothing: clear error"; else fail "aoectl detach of nothing (exit $rc: $out)"; fi

# A second target on the same image is refused while the first serves it.
start_target "$WORK/first.log" 0 1 t0 "$WORK/small.img"
expect_error "image already served" "in use by another process" 0 2 t0 "$WORK/small.img"
stop_target
start_target "$WORK/4095.log" 4095 1 t0 "$WORK/small.img"
stop_target
if grep -q "shelf 4095" "$WORK/4095.log"; then pass "shelf 4095 warns"; else fail "shelf 4095 warning missing: $(cat "$WORK/4095.log")"; fi
check "--help explains durability" grep -q "DURABILITY" <("$BIN/aoe-target" --help)
finish
