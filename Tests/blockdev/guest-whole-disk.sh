#!/bin/sh
# Runs inside the QEMU guest (busybox sh), started by /init; settings in /test/config (written by
# test-whole-disk-export.sh). Exports the whole emulated AHCI disk /dev/sda with aoe-target on v0 and drives
# it with aoectl from the veth peer. Prints marked lines for the host:
#   <TAG> STEP <name> PASS|FAIL <details>   one verdict per check
#   <TAG> FENCE <n> <name>                  sent just before CHECK POWER MODE number n (sg_raw on /dev/sg0,
#                                           straight to the drive); the host cuts QEMU's drive-side trace at
#                                           every 0xE5 and names window n <name>
#   <TAG> INFLIGHT <mode> <max> <samples> <busy> <multi> <maxreads> <maxwrites>   the inflight sampler's result
#   <TAG> INFO <text>
. /test/config
T=$BD_TAG
FAILS=0
FENCES=0
FENCE_BAD=0
OUT=/tmp/out
TGT=1.1
TPID=""

say()  { echo "$T $*"; }
pass() { say "STEP $1 PASS $2"; }
fail() { say "STEP $1 FAIL $2"; FAILS=$((FAILS + 1)); show_out; }
info() { say "INFO $*"; }
# the last command's output, unmarked, into the serial log (kept by the host on failure)
show_out() { for f in $OUT $OUT.err; do [ -s $f ] && head -c 3000 $f | sed 's/^/    | /'; done; true; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- fences: CHECK POWER MODE on /dev/sg0
# The target holds /dev/sda with O_EXCL; /dev/sg0 is the same drive through the SCSI generic driver, so
# the fence reaches the drive whatever the target does. The kernel never sends 0xE5 by itself.
# ATA PASS-THROUGH(16), non-data (protocol 3), CK_COND so the registers come back in descriptor sense.
fence() {
    local name=$1
    FENCES=$((FENCES + 1))
    say "FENCE $FENCES $name t=$(uptime_s)"
    sg_raw -v /dev/sg0 85 06 20 00 00 00 00 00 00 00 00 00 00 00 e5 00 >$OUT.fence 2>&1
    # sense: descriptor format (0x72), ATA Status Return descriptor (09): error +3, count +5, status +13
    set -- $(awk '
        /Raw sense data/ { f = 1; next }
        f && NF == 0 { f = 0 }
        f { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9a-fA-F][0-9a-fA-F]$/) b[n++] = ("0x" $i) + 0 }
        END { if (n > 8 && (b[0] == 114 || b[0] == 115))
                  for (i = 8; i + 13 < n; i += 2 + b[i + 1]) if (b[i] == 9) { print b[i + 13], b[i + 5]; exit } }' $OUT.fence)
    if [ "${2:-}" = 255 ] && [ $((${1:-0} & 0x41)) = 64 ]; then
        [ "$FENCES" = 1 ] && info "CHECK POWER MODE on /dev/sg0: status $1, count 0xff (active/idle)"
    else
        FENCE_BAD=$((FENCE_BAD + 1))
        cp $OUT.fence $OUT; : >$OUT.err
        fail "fence-$FENCES" "CHECK POWER MODE before $name on /dev/sg0: status '${1:-?}' count '${2:-?}', want DRDY and 0xff"
    fi
}

# ---------------------------------------------------------------- the disk
say "INFO guest up at $(uptime_s) s"
i=0
while { [ ! -b /dev/sda ] || [ ! -c /dev/sg0 ]; } && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
drv=$(cat /sys/class/scsi_host/host*/proc_name 2>/dev/null | sort -u | tr '\n' ' ')
model=$(tr -d ' ' </sys/block/sda/device/model 2>/dev/null)
size=$(cat /sys/block/sda/size 2>/dev/null)
qd=$(cat /sys/block/sda/device/queue_depth 2>/dev/null)
if [ -b /dev/sda ] && [ -c /dev/sg0 ] && [ "$drv" = "ahci " ] && [ "$model" = "$BD_MODEL" ] && [ "$size" = "$BD_SECTORS" ]; then
    pass disk "/dev/sda: $model, $size sectors, host driver $drv, queue_depth $qd (NCQ), /dev/sg0 present"
else
    fail disk "/dev/sda or /dev/sg0 missing or wrong: model '$model' size '$size' drivers '$drv' (want $BD_MODEL, $BD_SECTORS, ahci)"
    dmesg | tail -30
    exit 1
fi

# ---------------------------------------------------------------- veth pair
ip link set lo up
ip link add v0 type veth peer name v1 >$OUT 2>&1
# busybox ip ignores the peer name: the peer is whatever else appeared
CIF=$(ls /sys/class/net | grep -v -x -e lo -e v0 | head -1)
ip link set v0 up
[ -n "$CIF" ] && ip link set "$CIF" up
i=0
while [ $i -lt 50 ]; do
    [ "$(cat /sys/class/net/v0/operstate 2>/dev/null)" = up ] && [ "$(cat /sys/class/net/$CIF/operstate 2>/dev/null)" = up ] && break
    sleep 0.1; i=$((i + 1))
done
if [ -n "$CIF" ] && [ "$(cat /sys/class/net/v0/operstate)" = up ] && [ "$(cat /sys/class/net/$CIF/operstate)" = up ]; then
    pass veth "v0 <-> $CIF up"
else
    fail veth "veth pair not up (peer '$CIF')"; ip link; exit 1
fi

# ---------------------------------------------------------------- helpers: target, busy, sampler, bench
# start_target LOG ARGS...: aoe-target 1 1 v0 /dev/sda ARGS in the background; 0 once it answers IDENTIFY
start_target() {
    local log=$1 i=0
    shift
    echo "aoe-target 1 1 v0 /dev/sda $*" >"$log"
    aoe-target 1 1 v0 /dev/sda "$@" >>"$log" 2>&1 &
    TPID=$!
    while [ $i -lt 30 ]; do
        kill -0 $TPID 2>/dev/null || return 1
        aoectl identify -i "$CIF" "$TGT" --timeout 1 --json >$OUT 2>$OUT.err && return 0
        i=$((i + 1))
    done
    return 1
}
# stop_target: SIGTERM (finish, flush, exit 0); sets STOP_RC
stop_target() {
    local i=0
    STOP_RC=none
    [ -n "$TPID" ] || return 0
    kill $TPID 2>/dev/null
    while kill -0 $TPID 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 $TPID 2>/dev/null
    wait $TPID
    STOP_RC=$?
    TPID=""
}
serving_line() { grep -m1 'serving ' "$1"; }

# refused STEP LOG SHELF.SLOT...: aoe-target on /dev/sda must exit non-zero, saying the device is busy
refused() {
    local step=$1 log=$2 pid i=0 rc
    shift 2
    aoe-target "$@" v0 /dev/sda >"$log" 2>&1 &
    pid=$!
    while kill -0 $pid 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 $pid 2>/dev/null; then
        kill -9 $pid 2>/dev/null; wait $pid
        cp "$log" $OUT; : >$OUT.err
        fail "$step" "aoe-target $* v0 /dev/sda still running after 30 s: it opened a disk that is in use"
        return
    fi
    wait $pid
    rc=$?
    if [ "$rc" != 0 ] && grep -qi 'busy' "$log" && grep -q '/dev/sda' "$log"; then
        pass "$step" "aoe-target $* v0 /dev/sda refused (exit $rc): $(grep -i -m1 busy "$log" | cut -c1-160)"
    else
        cp "$log" $OUT; : >$OUT.err
        fail "$step" "aoe-target $* v0 /dev/sda: exit $rc, want non-zero with a 'device busy' error"
    fi
}

# /sys/block/sda/inflight ("reads writes" in flight at the disk) every ~20 ms until /tmp/sampler.stop
# exists; writes "max samples busy multi maxreads maxwrites" (busy: samples with >= 1 in flight, multi:
# >= 2) to FILE.
# Only shell builtins besides usleep, so one sample costs a fork at most.
sampler() {
    local max=0 n=0 busy=0 multi=0 mr=0 mw=0 r w t
    while [ ! -e /tmp/sampler.stop ]; do
        read -r r w </sys/block/sda/inflight
        t=$((r + w))
        n=$((n + 1))
        [ $t -ge 1 ] && busy=$((busy + 1))
        [ $t -ge 2 ] && multi=$((multi + 1))
        [ $t -gt $max ] && max=$t
        [ $r -gt $mr ] && mr=$r
        [ $w -gt $mw ] && mw=$w
        usleep 20000
    done
    echo "$max $n $busy $multi $mr $mw" >"$1"
}

# bench MODE: the randrw bench with verification, the sampler around it, each in its own fence window.
# Sets B_MAX (max in flight seen) and B_OK (1: bench passed verification).
bench() {
    local mode=$1 t0 rc spid ios errs mism vblk iops rtx n res=/tmp/bench-$1.json
    B_OK=0 B_MAX=0
    rm -f /tmp/sampler.stop /tmp/sampler.$mode
    fence "bench-$mode"
    [ "$WB_TRACE" = 1 ] && echo >$WBT/trace
    sampler /tmp/sampler.$mode &
    spid=$!
    t0=$(uptime_s)
    timeout -s KILL $((BD_DURATION + 120)) aoectl bench -i "$CIF" "$TGT" --rw randrw --bs 4k --qd 32 \
        --duration "$BD_DURATION" --verify --seed "$BD_SEED" --region "0:$BD_REGION" --json >$res 2>$res.err
    rc=$?
    touch /tmp/sampler.stop
    wait $spid
    fence "after-bench-$mode"
    jq -r '.ios, .errors, .verify_mismatches, .verified_blocks, (.iops | floor), .retransmits, (.first_error // ""), (.first_mismatch // "")' \
        $res >$res.f 2>/dev/null
    { read -r ios; read -r errs; read -r mism; read -r vblk; read -r iops; read -r rtx; read -r ferr; read -r fmis; } <$res.f
    if [ "$rc" = 0 ] && [ "${ios:-0}" -gt 0 ] && [ "$errs" = 0 ] && [ "$mism" = 0 ] && [ "${vblk:-0}" -gt 0 ]; then
        B_OK=1
        pass "bench-$mode" "randrw 4k QD32 ${BD_DURATION}s --verify: $ios I/Os ($iops IOPS), $vblk blocks verified, 0 errors, 0 mismatches, $rtx retransmits, $(since "$t0") s"
    else
        cp $res $OUT; cp $res.err $OUT.err
        fail "bench-$mode" "aoectl bench exit $rc: ios '$ios' errors '$errs' mismatches '$mism' verified '$vblk' ${ferr:+first error: $ferr }${fmis:+first mismatch: $fmis}"
    fi
    if [ "$WB_TRACE" = 1 ]; then
        n=$(grep -c 'writeback_start:.* bdi 8:0' $WBT/trace)
        [ "$n" = 0 ] && pass "no-kernel-writeback-$mode" "no write-back of /dev/sda by the kernel's flusher during the bench" ||
            fail "no-kernel-writeback-$mode" "$n write-back passes of /dev/sda by the kernel during the bench: the in-flight counts are not only the target's ($(grep -o 'reason=[a-z_]*' $WBT/trace | sort | uniq -c | tr '\n' ' '))"
    fi
    set -- $(cat /tmp/sampler.$mode 2>/dev/null)
    B_MAX=${1:-0}
    say "INFLIGHT $mode ${1:-0} ${2:-0} ${3:-0} ${4:-0} ${5:-0} ${6:-0}"
    info "sampler $mode: max $B_MAX in flight at /dev/sda (reads ${5:-0}, writes ${6:-0}) over ${2:-0} samples (${3:-0} with >= 1, ${4:-0} with >= 2)"
}

# export_mode NAME ARGS...: start the target with ARGS, check its start-up line, bench, stop
export_mode() {
    local name=$1 log=/tmp/target-$1.log line want missing
    shift
    if ! start_target "$log" "$@"; then
        cp "$log" $OUT; : >$OUT.err
        fail "target-$name" "aoe-target 1 1 v0 /dev/sda $* did not answer IDENTIFY"
        stop_target
        return 1
    fi
    line=$(serving_line "$log")
    info "target $name: $line"
    case "$name" in
        negative) want="I/O on 1 threads (--io-engine threads)" ;;
        *) want="I/O via io_uring" ;;
    esac
    missing=""
    echo "$line" | grep -qF "block device /dev/sda" || missing="'block device /dev/sda'"
    echo "$line" | grep -qF "$want" || missing="$missing${missing:+ and }'$want'"
    if [ -z "$missing" ]; then
        pass "engine-$name" "start-up line names 'block device /dev/sda' and '$want'"
    else
        cp "$log" $OUT; : >$OUT.err
        fail "engine-$name" "start-up line lacks $missing: '$line'"
    fi
    return 0
}

# ---------------------------------------------------------------- kernel write-back off
# In the buffered modes the kernel's flusher may write the bench's dirty pages back on its own, several at
# once, in LBA order: the kernel's concurrency, not the target's, and it would count in the sampler (seen
# here: 128 of the plain bench's writes written back, 5 at once at the drive, with the target on one thread).
# It starts background write-back when a disk's dirty pages exceed the disk's share of the background
# threshold, and that share is ~0 for a disk with no recent write-back; its periodic pass writes back what
# has been dirty for 30 s. So: a floor under the disk's share (bdi min_ratio 50%: far above a bench's few
# MiB) and no periodic pass. During a bench, pages then reach the disk only through the target (its reads,
# O_DIRECT writes, fdatasync); writeback:writeback_start events (tracefs) check that for every bench.
BDI=/sys/class/bdi/$(cat /sys/block/sda/dev)
echo 0 >/proc/sys/vm/dirty_writeback_centisecs
echo 50 >$BDI/min_ratio
WBT=/sys/kernel/tracing
mount -t tracefs nodev $WBT 2>/dev/null
if [ -w $WBT/events/writeback/writeback_start/enable ] && echo 1 >$WBT/events/writeback/writeback_start/enable; then
    WB_TRACE=1
else
    WB_TRACE=0
fi
info "vm.dirty_writeback_centisecs=$(cat /proc/sys/vm/dirty_writeback_centisecs), $BDI/min_ratio=$(cat $BDI/min_ratio), tracing writeback_start: $WB_TRACE"

# ---------------------------------------------------------------- 1. mounted disk is refused
mkdir -p /mnt
if mount -t ext4 /dev/sda /mnt >$OUT 2>$OUT.err && grep -q '^/dev/sda /mnt ext4 ' /proc/mounts; then
    echo "$T" >/mnt/hello && sync
    pass mount "mount -t ext4 /dev/sda /mnt: $(grep '^/dev/sda ' /proc/mounts | cut -d' ' -f1-3)"
    refused busy-mounted /tmp/busy-mounted.log 1 1
    umount /mnt && pass umount "umount /mnt" || fail umount "umount /mnt failed"
else
    fail mount "mount -t ext4 /dev/sda /mnt failed"
    dmesg | tail -10
fi

# ---------------------------------------------------------------- 2. the four modes, io_uring
NEG_ARGS=""
[ "$BD_NEGATIVE" = 1 ] && NEG_ARGS="--io-engine threads --workers 1" &&
    info "BD_NEGATIVE=1: the main modes run with $NEG_ARGS (the checks must fail)"
for mode in plain direct sync direct-sync; do
    case $mode in
        plain) args="" ;;
        direct) args="--direct" ;;
        sync) args="--sync" ;;
        direct-sync) args="--direct --sync" ;;
    esac
    # shellcheck disable=SC2086
    export_mode $mode $args $NEG_ARGS || continue
    if [ $mode = plain ]; then
        # a second export of the same disk while this one runs
        refused busy-exported /tmp/busy-exported.log 1 2
        kill -0 $TPID 2>/dev/null && aoectl identify -i "$CIF" "$TGT" --timeout 2 --json >$OUT 2>$OUT.err &&
            pass first-still-serves "the first export still answers IDENTIFY after the refused second one" ||
            fail first-still-serves "the first export no longer answers"
    fi
    bench $mode
    [ "$B_MAX" -ge 2 ] && pass "inflight-$mode" "max $B_MAX requests in flight at /dev/sda during the bench (>= 2)" ||
        fail "inflight-$mode" "max $B_MAX in flight at /dev/sda during the bench, want >= 2 (one I/O at a time)"
    if [ $mode = plain ]; then
        # the per-run pattern through AoE, then FLUSH CACHE EXT through AoE (plain mode: the write sits in
        # the page cache until the FLUSH's fdatasync)
        fence write
        aoectl write -i "$CIF" "$TGT" --timeout 10 --lba "$BD_LBA" --input /test/pattern.bin >$OUT 2>$OUT.err
        rc=$?
        rm -f /tmp/rb.bin
        aoectl read -i "$CIF" "$TGT" --timeout 10 --lba "$BD_LBA" --count "$BD_NSECT" --output /tmp/rb.bin >>$OUT 2>>$OUT.err
        if [ $rc = 0 ] && cmp -s /tmp/rb.bin /test/pattern.bin; then
            pass write "$BD_NSECT sectors of the pattern written at LBA $BD_LBA through AoE and read back equal"
        else
            fail write "aoectl write exit $rc; read back: $(cmp /tmp/rb.bin /test/pattern.bin 2>&1 | head -1)"
        fi
        fence flush
        aoectl ata -i "$CIF" "$TGT" --timeout 60 --command 0xEA --lba48 --json >$OUT 2>$OUT.err
        rc=$?
        st=$(jq -r '.status' $OUT 2>/dev/null)
        if [ $rc = 0 ] && [ -n "$st" ] && [ $((st & 0x21)) = 0 ] && [ $((st & 0x40)) = 64 ]; then
            pass flush "FLUSH CACHE EXT through AoE: status $(printf 0x%02x "$st")"
        else
            fail flush "FLUSH CACHE EXT through AoE: exit $rc, status '$st'"
        fi
        # control window: nothing sent, the target idle; the host wants no FLUSH at the drive here
        fence idle
        sleep 3
    fi
    fence "stop-$mode"
    stop_target
    info "target $mode at exit: $(grep -v 'serving ' /tmp/target-$mode.log | tail -n 3 | tr '\n' ' ' | cut -c1-600)"
    [ "$STOP_RC" = 0 ] && info "target $mode stopped on SIGTERM, exit 0" ||
        fail "stop-$mode" "aoe-target ($mode) exit $STOP_RC on SIGTERM, want 0"
done

# ---------------------------------------------------------------- 3. negative control: one worker thread
if export_mode negative --io-engine threads --workers 1; then
    bench negative
    if [ "$B_MAX" = 1 ]; then
        pass inflight-negative "--io-engine threads --workers 1: max 1 in flight at /dev/sda (the sampler sees one I/O at a time as 1)"
    else
        fail inflight-negative "--io-engine threads --workers 1: max $B_MAX in flight, want exactly 1 (sampler cannot tell)"
    fi
    fence stop-negative
    stop_target
    info "target negative at exit: $(grep -v 'serving ' /tmp/target-negative.log | tail -n 3 | tr '\n' ' ' | cut -c1-600)"
    [ "$STOP_RC" = 0 ] || fail stop-negative "aoe-target (negative) exit $STOP_RC on SIGTERM, want 0"
fi

fence end
[ "$FENCE_BAD" = 0 ] && pass fences "all $FENCES CHECK POWER MODE fences on /dev/sg0: DRDY, count 0xff" ||
    fail fences "$FENCE_BAD of $FENCES fences wrong"

# ---------------------------------------------------------------- 4. TRIM on whole disks (after the last fence)
# A block device offers TRIM exactly when the kernel can zero it without writing zeros (WRITE ZEROES): the AHCI
# drive cannot (libata gives it none), the virtio disk can.
wz=$(cat /sys/block/sda/queue/write_zeroes_max_bytes 2>/dev/null)
if start_target /tmp/trim-sda.log; then
    trim=$(jq -r .trim $OUT 2>/dev/null)
    aoectl discard -i "$CIF" "$TGT" --timeout 5 --lba 0 --count 8 >$OUT 2>$OUT.err; rc=$?
    if [ "${wz:-0}" = 0 ] && [ "$trim" = false ] && [ $rc = 1 ] && grep -q "does not support TRIM" $OUT.err; then
        pass trim-sda "/dev/sda (write_zeroes_max_bytes 0): IDENTIFY offers no TRIM, aoectl discard refused: $(cat $OUT.err)"
    elif [ "${wz:-0}" != 0 ] && [ "$trim" = true ] && [ $rc = 0 ]; then
        pass trim-sda "/dev/sda (write_zeroes_max_bytes $wz): IDENTIFY offers TRIM and a discard succeeds"
    else
        fail trim-sda "/dev/sda: write_zeroes_max_bytes '$wz', IDENTIFY trim '$trim', aoectl discard exit $rc ($(cat $OUT.err))"
    fi
    stop_target
else
    fail trim-sda "aoe-target on /dev/sda did not start: $(tail -3 /tmp/trim-sda.log)"
fi
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
wz=$(cat /sys/block/vda/queue/write_zeroes_max_bytes 2>/dev/null)
# --direct, so the pattern reaches the disk (the host finds the untrimmed copy at 16 MiB in its file).
echo "aoe-target 1 3 v0 /dev/vda --direct" >/tmp/trim-vda.log
aoe-target 1 3 v0 /dev/vda --direct >>/tmp/trim-vda.log 2>&1 &
TPID=$!
i=0
while [ $i -lt 30 ] && ! aoectl identify -i "$CIF" 1.3 --timeout 1 --json >$OUT 2>$OUT.err; do i=$((i + 1)); done
trim=$(jq -r '[.trim, .trim_reads_zeros] | map(tostring) | join(",")' $OUT 2>/dev/null)
head -c 1048576 /dev/urandom >/tmp/vd-pattern.bin
aoectl write -i "$CIF" 1.3 --timeout 10 --lba 16384 --input /tmp/vd-pattern.bin >$OUT 2>$OUT.err
aoectl write -i "$CIF" 1.3 --timeout 10 --lba 32768 --input /tmp/vd-pattern.bin >>$OUT 2>>$OUT.err
aoectl read -i "$CIF" 1.3 --timeout 10 --lba 16384 --count 2048 --output /tmp/vd-before.bin >>$OUT 2>>$OUT.err
aoectl discard -i "$CIF" 1.3 --timeout 10 --lba 16384 --count 2048 >>$OUT 2>>$OUT.err; rc=$?
aoectl read -i "$CIF" 1.3 --timeout 10 --lba 16384 --count 2048 --output /tmp/vd-after.bin >>$OUT 2>>$OUT.err
head -c 1048576 /dev/zero >/tmp/vd-zero.bin
if [ "${wz:-0}" -gt 0 ] && [ "$trim" = "true,true" ] && [ $rc = 0 ] && cmp -s /tmp/vd-before.bin /tmp/vd-pattern.bin &&
    cmp -s /tmp/vd-after.bin /tmp/vd-zero.bin; then
    pass trim-vda "/dev/vda --direct (write_zeroes_max_bytes $wz): IDENTIFY offers TRIM reading zeros; 1 MiB at 8 MiB held the pattern, then read as zeros after aoectl discard (the copy at 16 MiB stays)"
else
    fail trim-vda "/dev/vda: write_zeroes_max_bytes '$wz', IDENTIFY trim/zeros '$trim', discard exit $rc, pattern before: $(cmp -s /tmp/vd-before.bin /tmp/vd-pattern.bin && echo yes || echo no), zeros after: $(cmp -s /tmp/vd-after.bin /tmp/vd-zero.bin && echo yes || echo no)"
fi
stop_target
sync
say "INFO guest done at $(uptime_s) s, $FAILS failure(s), $FENCES fences"
[ "$FAILS" = 0 ]
