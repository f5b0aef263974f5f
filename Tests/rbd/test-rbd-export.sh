#!/usr/bin/env bash
# An export on a Ceph RBD image (one-node cluster on the namespace's loopback, Tests/rbd/ceph-cluster.sh):
# bench --verify through AoE; a resize while serving (IDENTIFY and reads past the old end follow it); data
# written through AoE read back with librbd's own `rbd export` (and, as the
# negative control, found different from a pattern that was not written); TRIM of part of an object reads
# back as zeros through librbd; kill -9 under write load, restart,
# every acknowledged write present (--verify-existing); clear errors for a missing image, a wrong pool, an
# image locked by another target and a cluster nobody answers for.
. "$(dirname "$0")/../e2e/lib.sh"
. "$ROOT/Tests/rbd/ceph-cluster.sh"
differs() { ! cmp -s "$@"; }
need_tool ceph-mon ceph-osd ceph-mgr monmaptool ceph rbd unshare mount ldconfig ldd
trap 'ceph_stop; cleanup' EXIT
net_up 1500
ceph_start "$WORK/ceph" "$NS" || skip "the one-node Ceph cluster did not start (see above)"
ceph_image_create img 128M || { fail "rbd create"; finish; }

start_target "$WORK/t1.log" -b 64 1 1 t0 rbd:rbd/img
check "served through librbd's aio" grep -q "librbd aio on rbd:rbd/img" "$WORK/t1.log"
check "identify: 128 MiB = 262144 sectors" grep -qx "sectors: 262144" <(aoectl identify -i i0 1.1)
aoectl bench -i i0 1.1 --rw randrw --qd 16 --bs 8k --count 2000 --region 0:16384 --verify --seed 7 --json >"$WORK/v.json"
check "randrw --verify on rbd: 0 mismatches, 0 errors" test "$(jq -c '[.verify_mismatches, .errors, (.verified_blocks > 0)]' "$WORK/v.json")" = "[0,0,true]"

# 64 KiB at sector 100000 through AoE, read back through librbd.
head -c 65536 /dev/urandom >"$WORK/pattern"
aoectl write -i i0 1.1 --lba 100000 --input "$WORK/pattern" >/dev/null
ceph_rbd export rbd/img "$WORK/exported" >/dev/null 2>&1
check "what AoE wrote is in the image (rbd export)" cmp -s "$WORK/pattern" <(dd if="$WORK/exported" bs=512 skip=100000 count=128 2>/dev/null)
head -c 65536 /dev/urandom >"$WORK/other"
check "negative control: a pattern not written does not compare equal" differs "$WORK/other" <(dd if="$WORK/exported" bs=512 skip=100000 count=128 2>/dev/null)

# TRIM of 3 sectors inside that pattern (part of one 4 MiB object): librbd zeroes them (rbd_skip_partial_discard
# off) instead of skipping a partial discard, so they read back as zeros, as IDENTIFY promises.
check "identify: TRIM, reading zeros" grep -qx "trim: yes, trimmed sectors read as zeros" <(aoectl identify -i i0 1.1)
check "aoectl discard of 3 sectors inside the pattern" aoectl discard -i i0 1.1 --lba 100010 --count 3
python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); d[10 * 512:13 * 512] = bytes(1536); sys.stdout.buffer.write(d)' \
    "$WORK/pattern" >"$WORK/trimmed"
rm -f "$WORK/exported"   # rbd export never overwrites a file
ceph_rbd export rbd/img "$WORK/exported" >/dev/null 2>&1
check "after the discard: those 3 sectors are zeros in the image, the rest of the pattern is intact (rbd export)" \
    cmp -s "$WORK/trimmed" <(dd if="$WORK/exported" bs=512 skip=100000 count=128 2>/dev/null)
check "negative control: the pattern before the discard no longer compares equal" \
    differs "$WORK/pattern" <(dd if="$WORK/exported" bs=512 skip=100000 count=128 2>/dev/null)

# A resize while serving is noticed, logged and announced; IDENTIFY and the range check follow it.
ceph_rbd resize --size 192M rbd/img >/dev/null 2>&1
for _ in $(seq 50); do grep -q "resized" "$WORK/t1.log" && break; sleep 0.1; done
check "the resize is noticed ($(grep -o 'resized.*' "$WORK/t1.log" | head -1))" grep -q "resized from 262144 to 393216 sectors" "$WORK/t1.log"
check "identify: 192 MiB = 393216 sectors" grep -qx "sectors: 393216" <(aoectl identify -i i0 1.1)
check "a read past the old end works" aoectl read -i i0 1.1 --lba 300000 --count 8 --output "$WORK/grown.bin"

# Another writable target on the same image is refused: the first holds the exclusive lock.
ip netns exec "$NS" "$BIN/aoe-target" 1 2 t0 rbd:rbd/img >"$WORK/second.log" 2>&1; rc=$?
check "second target on a locked image exits 1 naming the lock ($(tail -1 "$WORK/second.log"))" \
    test $rc -eq 1 -a -n "$(grep 'locked by another client' "$WORK/second.log")"
stop_target

# kill -9 under write load: every write acknowledged before the kill is in the image after a restart.
start_target "$WORK/t2.log" -b 64 1 1 t0 rbd:rbd/img
aoectl bench -i i0 1.1 --rw write --qd 16 --bs 4k --count 4096 --region 0:32768 --verify --seed 11 --json >"$WORK/w.json"
check "sequential write --verify: all 4096 blocks verified" test "$(jq -c '[.verify_mismatches, .verified_blocks, .errors]' "$WORK/w.json")" = "[0,4096,0]"
aoectl bench -i i0 1.1 --rw randwrite --qd 32 --bs 4k --duration 20 --region 0:32768 --verify --seed 11 --json >"$WORK/kill.json" 2>/dev/null &
bench=$!
sleep 2
kill -KILL "$TARGET_PID"
wait "$bench"
start_target "$WORK/t3.log" -b 64 1 1 t0 rbd:rbd/img
check "restart after kill -9 takes the lock again" grep -q "serving" "$WORK/t3.log"
aoectl bench -i i0 1.1 --rw read --qd 16 --bs 4k --count 4096 --region 0:32768 --verify-existing --seed 11 --json >"$WORK/after.json"
check "after kill -9: every block holds a whole seed-11 block (bench --verify-existing: no torn or foreign data)" test "$(jq -c '[.verify_mismatches, (.verified_blocks > 0)]' "$WORK/after.json")" = "[0,true]"
aoectl bench -i i0 1.1 --rw read --qd 16 --bs 4k --count 512 --region 0:32768 --verify-existing --seed 12 --json >"$WORK/wrongseed.json"; rc=$?
check "negative control: another seed's pattern is not found" test $rc -ne 0 -a "$(jq .verify_mismatches "$WORK/wrongseed.json")" -gt 0
stop_target

# A reload that restarts the export with the same image (here a new model string, which needs a restart) keeps
# the image open: the exclusive lock never changes hands, so a failover peer would not see it free, and I/O
# written before the reload reads back after it.
cat >"$WORK/rbd.toml" <<EOF
state_dir = "$WORK/state"
[[export]]
shelf = 1
slot = 1
interfaces = ["t0"]
path = "rbd:rbd/img"
buffers = 64
failover = true
EOF
start_target "$WORK/t4.log" --config "$WORK/rbd.toml"
aoectl bench -i i0 1.1 --rw write --qd 16 --bs 4k --count 1024 --region 0:8192 --verify --seed 13 --json >"$WORK/pre.json"
check "before the reload: 1024 blocks written and verified" test "$(jq -c '[.verify_mismatches, .verified_blocks, .errors]' "$WORK/pre.json")" = "[0,1024,0]"
owner_before=$(ceph_rbd lock ls rbd/img 2>&1)
sed -i 's/^buffers = 64$/buffers = 64\nmodel = "reloaded"/' "$WORK/rbd.toml"
kill -HUP "$TARGET_PID"
for _ in $(seq 100); do grep -q "restarted with its new settings" "$WORK/t4.log" && break; sleep 0.1; done
check "reload: restarted with the image kept open" grep -q "e1.1 restarted with its new settings (its device kept open)" "$WORK/t4.log"
owner_after=$(ceph_rbd lock ls rbd/img 2>&1)
check "reload: the same client holds the exclusive lock ($(tr '\n' ' ' <<<"$owner_after" | head -c 120))" \
    test -n "$owner_before" -a "$owner_before" = "$owner_after"
check "reload: the new model is served" grep -q "reloaded" <(aoectl identify -i i0 1.1)
aoectl bench -i i0 1.1 --rw read --qd 16 --bs 4k --count 1024 --region 0:8192 --verify-existing --seed 13 --json >"$WORK/post.json"
check "after the reload: every block written before it reads back" test "$(jq -c '[.verify_mismatches, .errors]' "$WORK/post.json")" = "[0,0]"
stop_target

# Clear errors.
expect_error() { # expect_error WHAT EXIT PATTERN ARGS...: exit code EXIT (1: cannot serve, 64: usage) and PATTERN said
    local what=$1 want=$2 pattern=$3; shift 3
    ip netns exec "$NS" timeout 60 "$BIN/aoe-target" "$@" >"$WORK/err.log" 2>&1; local rc=$?
    check "$what: exit $want, '$(grep -F "$pattern" "$WORK/err.log" | head -1)'" test $rc -eq "$want" -a -n "$(grep -F "$pattern" "$WORK/err.log")"
}
expect_error "missing image" 1 "no image 'nope' in pool 'rbd'" 1 1 t0 rbd:rbd/nope
expect_error "wrong pool" 1 "pool 'nopool' does not exist" 1 1 t0 rbd:nopool/img
expect_error "malformed name" 64 "rbd:img: name the image as rbd:POOL/IMAGE" 1 1 t0 rbd:img
expect_error "--direct on rbd" 64 "does not apply to an RBD image" --direct 1 1 t0 rbd:rbd/img
# Without the Ceph client libraries (librbd hidden in a private mount namespace): a clear error, not a failed start.
librbd=$(ldconfig -p | awk '/librbd\.so\.1 /{ print $NF; exit }')
ip netns exec "$NS" unshare -m sh -c "mount --bind /dev/null '$librbd' && exec '$BIN/aoe-target' 1 1 t0 rbd:rbd/img" >"$WORK/nolib.log" 2>&1; rc=$?
check "without librbd: exit 1, '$(tail -1 "$WORK/nolib.log")'" test $rc -eq 1 -a -n "$(grep -F "install librbd1 and librados2" "$WORK/nolib.log")"
check "a file export needs no Ceph library: aoe-target does not link librbd" test "$(ldd "$BIN/aoe-target" | grep -c -E 'librbd|librados')" -eq 0
sed 's/^mon_host.*/mon_host = 127.0.0.1:1/' "$CEPH_CONF" >"$WORK/unreachable.conf"
start=$SECONDS
CEPH_CONF=$WORK/unreachable.conf expect_error "no cluster reachable" 1 "no monitor answered within 10 s" 1 1 t0 rbd:rbd/img
check "the unreachable cluster fails within 30 s, not a hang ($((SECONDS - start)) s)" test $((SECONDS - start)) -le 30
finish
