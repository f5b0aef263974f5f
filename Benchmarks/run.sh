#!/usr/bin/env bash
# Benchmarks/run.sh: aoe-target against vblade and a null device, over a veth pair in a private network
# namespace, with aoectl and the reference C client Benchmarks/aoe-load.c. Not part of the test suite.
#
#   sudo Benchmarks/run.sh [--quick] [--duration S] [--rounds N] [--mtu "1500 9000"] [--keep]
#                          [--targets "aoe/tmpfs null ..."] [--workloads "4k-randread-qd32 ..."]
#                          [--baseline BIN] [--out DIR]
#
# Builds release binaries and the C client, creates namespace aoe-bench-PID with veth pair bt (target end) /
# bi (initiator end), runs every (target, workload, client) in interleaved rounds (round 1: A B C ..., round
# 2: A B C ...), and prints one table. Everything it starts is killed by PID on exit; the namespace, images
# and the scratch folder (/tmp/bench-XXXXXX, kept with --keep) are removed. Frames never leave the namespace.
# --baseline BIN adds base/tmpfs, base/disk-direct and base/disk-sync: the same rows served by another aoe-target
# binary (e.g. a release build of the commit before a change), interleaved with the current one in the same run,
# and a "before/after" section with current / baseline per row.
# cnull is Benchmarks/null-target.c, a C target that only batches (recvmmsg/sendmmsg): the plain-socket ceiling.
# --out DIR (default Benchmarks/results; with --quick, the scratch folder, so a quick look never rewrites the
# committed results) receives results.json (every run: target, workload, client, round,
# IOPS, MB/s, p50/p99, CPU per I/O, retransmits, errors) and iops.svg, the mean IOPS per target and workload
# drawn with gnuplot. See Benchmarks/README.md for what each row means.
set -uo pipefail

QUICK=0 DURATION='' ROUNDS=2 MTUS='' KEEP=0 ONLY_TARGETS='' ONLY_WORKLOADS='' BASELINE='' OUT=''
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift ;;
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
        --mtu) MTUS=${2:?--mtu needs a list like \"1500 9000\"}; shift ;;
        --keep) KEEP=1 ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        --targets) ONLY_TARGETS=${2:?--targets needs a list}; shift ;;
        --workloads) ONLY_WORKLOADS=${2:?--workloads needs a list}; shift ;;
        --baseline) BASELINE=${2:?--baseline needs an aoe-target binary}; shift ;;
        -h|--help) usage 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage 2 ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --rounds must be a positive integer" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root (network namespace, raw sockets): sudo $0 $*" >&2; exit 1; }

if [ "$QUICK" = 1 ]; then
    : "${DURATION:=2}" "${MTUS:=1500}"; IMG_MB=256
    TARGETS="aoe/tmpfs aoe/tmpfs-metrics vblade/tmpfs aoe/disk-direct vblade/disk aoe/disk vblade/disk-cached aoe/disk-sync aoe/disk-direct-sync null cnull aoe/rbd"
    WORKLOADS="4k-randread-qd32 4k-randwrite-qd32 seqread-maxframe-qd32"
else
    : "${DURATION:=5}" "${MTUS:=1500 9000}"; IMG_MB=1024
    TARGETS="aoe/tmpfs aoe/tmpfs-metrics vblade/tmpfs aoe/disk-direct vblade/disk aoe/disk vblade/disk-cached aoe/disk-sync aoe/disk-direct-sync vblade/disk-sync null cnull aoe/rbd"
    WORKLOADS="4k-randread-qd1 4k-randread-qd32 4k-randwrite-qd32 seqread-maxframe-qd32"
fi
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { echo "run.sh: --baseline $BASELINE is not an executable" >&2; exit 2; }
    BASELINE=$(realpath "$BASELINE")
    TARGETS="$TARGETS base/tmpfs base/disk-direct base/disk-sync"
fi
TARGETS=${ONLY_TARGETS:-$TARGETS} WORKLOADS=${ONLY_WORKLOADS:-$WORKLOADS}
for t in $TARGETS; do case $t in aoe/rbd|aoe/tmpfs|aoe/tmpfs-metrics|aoe/disk-direct|aoe/disk|aoe/disk-sync|aoe/disk-direct-sync|null|null-recvmmsg|aoe/tmpfs-recvmmsg|cnull|vblade/tmpfs|vblade/disk|vblade/disk-cached|vblade/disk-sync) ;;
    base/tmpfs|base/disk-direct|base/disk-sync) [ -n "$BASELINE" ] || { echo "run.sh: $t needs --baseline BIN" >&2; exit 2; } ;;
    *) echo "run.sh: unknown target $t" >&2; exit 2 ;; esac; done
for w in $WORKLOADS; do case $w in 4k-randread-qd1|4k-randread-qd32|4k-randwrite-qd32|seqread-maxframe-qd32) ;;
    *) echo "run.sh: unknown workload $w" >&2; exit 2 ;; esac; done
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 1 ]] || { echo "run.sh: --duration must be whole seconds >= 1" >&2; exit 2; }
SECTORS=$((IMG_MB * 2048))       # every target, null included, is exercised over the same region 0:SECTORS
C_CLIENT_TARGETS="null null-recvmmsg cnull vblade/tmpfs aoe/rbd"

cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
W=$(mktemp -d /tmp/bench-XXXXXX)
NS=aoe-bench-$$
TI=bt II=bi
SHM_IMG=/dev/shm/aoe-bench-$$.img
DISK_IMG=/var/tmp/aoe-bench-$$.img
RESULTS=$W/results.tsv
TIMEOUT_PID='' TARGET_PID=''
T_START=$(date +%s)
log() { printf '[%4ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }

RSS_NOTE=''   # "target mtu" of the target running, for its peak resident memory
stop_target() {
    local tp=$TARGET_PID wp=$TIMEOUT_PID hwm
    TARGET_PID='' TIMEOUT_PID=''
    if [ -n "$tp" ] && [ -n "$RSS_NOTE" ]; then
        hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$tp/status" 2>/dev/null)
        [ -n "$hwm" ] && printf '%s\t%s\n' "$RSS_NOTE" "$hwm" >>"$W/rss.tsv"
    fi
    [ -n "$tp" ] && kill -TERM "$tp" 2>/dev/null
    if [ -n "$wp" ]; then
        for _ in $(seq 50); do kill -0 "$wp" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$wp" 2>/dev/null && { [ -n "$tp" ] && kill -KILL "$tp" 2>/dev/null; kill -KILL "$wp" 2>/dev/null; }
        wait "$wp" 2>/dev/null
    fi
    return 0
}
cleanup() {
    stop_target
    [ -n "${CEPH_DIR:-}" ] && ceph_stop
    ip netns del "$NS" 2>/dev/null
    rm -f "$SHM_IMG" "$DISK_IMG"
    if [ "$KEEP" = 1 ]; then log "results and logs kept in $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- prerequisites and build
# shellcheck source=../scripts/install-deps.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/install-deps.sh"
deps_ensure build bench || exit 1
log "building release binaries (swift build -c release) and aoe-load"
swift build -c release >"$W/build.log" 2>&1 || { tail -30 "$W/build.log" >&2; echo "run.sh: swift build failed" >&2; exit 1; }
BIN=$(swift build -c release --show-bin-path)
gcc -O2 -Wall -o "$W/aoe-load" "$REPO/Benchmarks/aoe-load.c" || exit 1
gcc -O2 -Wall -o "$W/null-target" "$REPO/Benchmarks/null-target.c" || exit 1
AOECTL=$BIN/aoectl AOETARGET=$BIN/aoe-target LOAD=$W/aoe-load CNULL=$W/null-target VBLADE=$(command -v vblade)
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- images and namespace
log "writing ${IMG_MB} MiB images: $SHM_IMG (tmpfs) and $DISK_IMG (real disk, O_DIRECT)"
head -c $((IMG_MB << 20)) /dev/urandom >"$SHM_IMG" || exit 1   # real data: no holes, nothing sparse
dd if="$SHM_IMG" of="$DISK_IMG" bs=1M oflag=direct conv=fsync status=none ||
    { echo "run.sh: cannot write $DISK_IMG with O_DIRECT" >&2; exit 1; }

ip netns add "$NS" || exit 1
ip -n "$NS" link add "$TI" type veth peer name "$II" || exit 1
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
ip netns exec "$NS" sysctl -qw net.ipv6.conf.$TI.disable_ipv6=1 net.ipv6.conf.$II.disable_ipv6=1 2>/dev/null
ip -n "$NS" link set "$TI" up && ip -n "$NS" link set "$II" up && ip -n "$NS" link set lo up || exit 1
inns() { ip netns exec "$NS" "$@"; }

# ---------------------------------------------------------------- Ceph, for aoe/rbd and fio/rbd
# A one-node cluster on the namespace's loopback (Tests/rbd/ceph-cluster.sh) and an image of the same size as
# the others, written through once so that reads meet data, not absent objects.
RBD_IMAGE=bench
if [[ " $TARGETS " == *" aoe/rbd "* ]]; then
    . "$REPO/Tests/rbd/ceph-cluster.sh"
    log "starting a one-node Ceph cluster for aoe/rbd and fio/rbd"
    if ceph_start "$W/ceph" "$NS" && ceph_image_create "$RBD_IMAGE" "${IMG_MB}M" &&
        ceph_rbd bench --io-type write --io-pattern seq --io-size 4M --io-total "${IMG_MB}M" "rbd/$RBD_IMAGE" >"$W/rbd-fill.log" 2>&1; then
        :
    else
        log "Ceph did not start: aoe/rbd and fio/rbd left out"
        TARGETS=$(sed 's|aoe/rbd||' <<<"$TARGETS")
    fi
fi

# ---------------------------------------------------------------- targets
target_cmd() {   # prints the command line of target $1, one word per line
    case "$1" in
        aoe/tmpfs)        printf '%s\n' "$AOETARGET" --buffers 256 1 1 "$TI" "$SHM_IMG" ;;
        # The same with the Prometheus endpoint on (per-request latency and bytes recorded), for its cost.
        aoe/tmpfs-metrics) printf '%s\n' "$AOETARGET" --buffers 256 --metrics 127.0.0.1:9910 1 1 "$TI" "$SHM_IMG" ;;
        aoe/disk-direct)  printf '%s\n' "$AOETARGET" --buffers 256 --direct 1 1 "$TI" "$DISK_IMG" ;;
        aoe/disk)         printf '%s\n' "$AOETARGET" --buffers 256 1 1 "$TI" "$DISK_IMG" ;;
        aoe/disk-sync)    printf '%s\n' "$AOETARGET" --buffers 256 --sync 1 1 "$TI" "$DISK_IMG" ;;
        aoe/disk-direct-sync) printf '%s\n' "$AOETARGET" --buffers 256 --direct --sync 1 1 "$TI" "$DISK_IMG" ;;
        null)             printf '%s\n' "$AOETARGET" --buffers 256 1 1 "$TI" null:8G ;;
        # The receive ring's counterparts: the same targets receiving with recvmmsg.
        null-recvmmsg)    printf '%s\n' "$AOETARGET" --buffers 256 --no-packet-ring 1 1 "$TI" null:8G ;;
        aoe/tmpfs-recvmmsg) printf '%s\n' "$AOETARGET" --buffers 256 --no-packet-ring 1 1 "$TI" "$SHM_IMG" ;;
        cnull)            printf '%s\n' "$CNULL" "$TI" 1 1 --buffers 256 --sectors $((8 << 21)) ;;
        aoe/rbd)          printf '%s\n' "$AOETARGET" --buffers 256 1 1 "$TI" "rbd:rbd/$RBD_IMAGE" ;;
        base/*)           target_cmd "aoe/${1#base/}" | sed "1s|.*|$BASELINE|" ;;
        vblade/tmpfs)     printf '%s\n' "$VBLADE" -b 256 1 1 "$TI" "$SHM_IMG" ;;
        vblade/disk)      printf '%s\n' "$VBLADE" -b 256 -d 1 1 "$TI" "$DISK_IMG" ;;
        vblade/disk-cached) printf '%s\n' "$VBLADE" -b 256 1 1 "$TI" "$DISK_IMG" ;;
        vblade/disk-sync) printf '%s\n' "$VBLADE" -b 256 -d -s 1 1 "$TI" "$DISK_IMG" ;;
    esac
}
SPF=
start_target() {   # $1 name, $2 log file, $3 lifetime bound in seconds
    local -a cmd
    mapfile -t cmd < <(target_cmd "$1")
    ip netns exec "$NS" timeout -s TERM -k 5 "$3" "${cmd[@]}" >"$2" 2>&1 &   # ip execs timeout: same PID
    TIMEOUT_PID=$!
    for _ in $(seq 50); do   # the target is timeout's only child
        TARGET_PID=$(cat /proc/$TIMEOUT_PID/task/$TIMEOUT_PID/children 2>/dev/null | awk '{print $1}')
        [ -n "$TARGET_PID" ] && break
        sleep 0.1
    done
    [ -n "$TARGET_PID" ] || { log "$1: did not start"; return 1; }
    local info
    for _ in $(seq 20); do
        info=$(inns timeout 5 "$AOECTL" discover -i "$II" --timeout 0.5 --json 2>/dev/null |
            jq -r '.targets[]? | select(.target=="1.1") | "\(.sectors_per_frame) \(.buffer_count) \(.sectors)"' 2>/dev/null)
        [ -n "$info" ] && break
        kill -0 "$TARGET_PID" 2>/dev/null || break
    done
    [ -n "$info" ] || { log "$1: no reply to discover; log:"; sed 's/^/    /' "$2" >&2; stop_target; return 1; }
    read -r SPF _ _ <<<"$info"
}
cpu_ticks() {   # utime+stime of process $1 (all threads) from /proc/PID/stat
    local line rest
    read -r line <"/proc/$1/stat" || { echo 0; return; }
    rest=${line##*) }
    set -- $rest
    echo $(( ${12} + ${13} ))
}

# ---------------------------------------------------------------- workloads and clients
workload_args() {   # $1 workload -> "rw bs qd"
    case "$1" in
        4k-randread-qd1) echo "randread 4096 1" ;;
        4k-randread-qd32) echo "randread 4096 32" ;;
        4k-randwrite-qd32) echo "randwrite 4096 32" ;;
        seqread-maxframe-qd32) echo "read $((SPF * 512)) 32" ;;
    esac
}
run_one() {   # $1 mtu, $2 round, $3 target, $4 workload, $5 client
    local mtu=$1 round=$2 target=$3 wl=$4 client=$5 rw bs qd out rc t0 t1 fields
    read -r rw bs qd <<<"$(workload_args "$wl")"
    t0=$(cpu_ticks "$TARGET_PID")
    if [ "$client" = aoectl ]; then
        out=$(inns timeout -k 2 $((DURATION * 3 + 20)) "$AOECTL" bench -i "$II" 1.1 --rw "$rw" --bs "$bs" --qd "$qd" \
            --region "0:$SECTORS" --json --duration "$DURATION" 2>>"$W/aoectl.err"); rc=$?
        fields=$(jq -r '[.iops, .mbps, .latency_us.p50, .latency_us.p99, .retransmits, .errors, .ios] | @tsv' <<<"$out" 2>/dev/null)
    else
        out=$(inns timeout -k 2 $((DURATION + 20)) "$LOAD" -i "$II" 1.1 --rw "$rw" --bs "$bs" --qd "$qd" \
            --seconds "$DURATION" --region "0:$SECTORS" 2>>"$W/aoe-load.err"); rc=$?
        fields=$(jq -r '[.iops, .mbps, .p50_us, .p99_us, .retransmits, .errors, .ios] | @tsv' <<<"$out" 2>/dev/null)
    fi
    t1=$(cpu_ticks "$TARGET_PID")
    if [ -z "$fields" ]; then
        log "  $target $wl $client: FAILED (exit $rc)"
        printf '%s\t%s\t%s\t%s\t%s\tfail\n' "$mtu" "$target" "$wl" "$client" "$round" >>"$RESULTS"
        return
    fi
    local iops mbps p50 p99 retx errs ios cpu
    IFS=$'\t' read -r iops mbps p50 p99 retx errs ios <<<"$fields"
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$ios" 'BEGIN { if (n > 0) printf "%.2f", d * 1e6 / hz / n; else print "nan" }')
    printf '%s\t%s\t%s\t%s\t%s\tok\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mtu" "$target" "$wl" "$client" "$round" \
        "$iops" "$mbps" "$p50" "$p99" "$cpu" "$retx" "$errs" >>"$RESULTS"
    log "  $(printf '%-20s %-22s %-8s %9.0f IOPS %8.1f MB/s p50 %7.0f us p99 %7.0f us %6s us CPU/IO retx %s err %s' \
        "$target" "$wl" "$client" "$iops" "$mbps" "$p50" "$p99" "$cpu" "$retx" "$errs")"
}

run_fio() {   # $1 round: the local device ceiling on the real-disk image, 4k random reads and writes at QD32
    local rw wl side out fields
    for rw in randread randwrite; do
        wl=4k-$rw-qd32 side=read
        [ $rw = randwrite ] && side=write
        out=$(timeout -k 2 $((DURATION + 30)) fio --name=ceiling --filename="$DISK_IMG" --ioengine=libaio --direct=1 \
            --rw=$rw --bs=4k --iodepth=32 --size="${IMG_MB}M" --runtime="$DURATION" --time_based \
            --output-format=json 2>>"$W/fio.err")
        fields=$(jq -r --arg s $side '.jobs[0] | [.[$s].iops, .[$s].bw_bytes / 1e6, .[$s].clat_ns.percentile["50.000000"] / 1000,
            .[$s].clat_ns.percentile["99.000000"] / 1000,
            ((.usr_cpu + .sys_cpu) / 100 * .[$s].runtime * 1000 / (if .[$s].total_ios > 0 then .[$s].total_ios else 1 end))] | @tsv' \
            <<<"$out" 2>/dev/null)
        if [ -z "$fields" ]; then
            log "  fio $wl: FAILED"; printf '%s\t%s\t%s\t%s\t%s\tfail\n' - fio/disk "$wl" fio "$1" >>"$RESULTS"; continue
        fi
        local iops mbps p50 p99 cpu
        IFS=$'\t' read -r iops mbps p50 p99 cpu <<<"$fields"
        printf '%s\t%s\t%s\t%s\t%s\tok\t%s\t%s\t%s\t%s\t%.2f\t0\t0\n' - fio/disk "$wl" fio "$1" \
            "$iops" "$mbps" "$p50" "$p99" "$cpu" >>"$RESULTS"
        log "  $(printf '%-16s %-22s %-8s %9.0f IOPS %8.1f MB/s' fio/disk "$wl" fio "$iops" "$mbps")"
    done
}

run_fio_rbd() {   # $1 round: local librbd (fio's rbd engine) on the image aoe/rbd serves, at the same QD
    local wl rw out fields
    for wl in $WORKLOADS; do
        case $wl in 4k-randread-qd32) rw=randread ;; 4k-randwrite-qd32) rw=randwrite ;; *) continue ;; esac
        # CPU of every thread of fio's processes, librbd's included (fio's own usr_cpu/sys_cpu count only its job
        # thread), from bash's accounting of the waited-for child: comparable with the target's CPU per I/O.
        local TIMEFORMAT='%U %S' ticks
        ticks=$( { time inns timeout -k 2 $((DURATION + 30)) fio --name=rbd --ioengine=rbd --clientname=admin --pool=rbd \
            --rbdname="$RBD_IMAGE" --rw=$rw --bs=4k --iodepth=32 --runtime="$DURATION" --time_based \
            --output-format=json >"$W/fio-rbd.json" 2>>"$W/fio-rbd.err"; } 2>&1 )
        out=$(cat "$W/fio-rbd.json")
        local side=read; [ $rw = randwrite ] && side=write
        fields=$(jq -r --arg s $side --arg cpu "$ticks" '.jobs[0] | [.[$s].iops, .[$s].bw_bytes / 1e6, .[$s].clat_ns.percentile["50.000000"] / 1000,
            .[$s].clat_ns.percentile["99.000000"] / 1000,
            (($cpu | split(" ") | map(tonumber) | add) * 1e6 / (if .[$s].total_ios > 0 then .[$s].total_ios else 1 end))] | @tsv' <<<"$out" 2>/dev/null)
        if [ -z "$fields" ]; then
            log "  fio/rbd $wl: FAILED"; printf '%s\t%s\t%s\t%s\t%s\tfail\n' - fio/rbd "$wl" fio "$1" >>"$RESULTS"; continue
        fi
        local iops mbps p50 p99 cpu
        IFS=$'\t' read -r iops mbps p50 p99 cpu <<<"$fields"
        printf '%s\t%s\t%s\t%s\t%s\tok\t%s\t%s\t%s\t%s\t%.2f\t0\t0\n' - fio/rbd "$wl" fio "$1" "$iops" "$mbps" "$p50" "$p99" "$cpu" >>"$RESULTS"
        log "  $(printf '%-16s %-22s %-8s %9.0f IOPS %8.1f MB/s' fio/rbd "$wl" fio "$iops" "$mbps")"
    done
}

# ---------------------------------------------------------------- the runs
nwl=$(wc -w <<<"$WORKLOADS")
LIFETIME=$(( (nwl * 3) * (DURATION * 5 + 25) + 60 ))   # bound on one target's life: all its runs, worst case
: >"$RESULTS"
first_mtu=1
for mtu in $MTUS; do
    ip -n "$NS" link set "$TI" mtu "$mtu" && ip -n "$NS" link set "$II" mtu "$mtu" || exit 1
    for round in $(seq "$ROUNDS"); do
        log "MTU $mtu, round $round/$ROUNDS"
        [ "$first_mtu" = 1 ] && run_fio "$round"
        [ "$first_mtu" = 1 ] && [[ " $TARGETS " == *" aoe/rbd "* ]] && run_fio_rbd "$round"
        for target in $TARGETS; do
            tlog="$W/target-${target//\//-}-mtu$mtu-r$round.log"
            RSS_NOTE="$target $mtu"
            # The page-cache rows read the real-disk image through the cache; it was written with O_DIRECT, so
            # whichever of them ran first would otherwise meet a cold cache and the next a warm one.
            case $target in aoe/disk|aoe/disk-sync|vblade/disk-cached) cat "$DISK_IMG" >/dev/null ;; esac
            start_target "$target" "$tlog" "$LIFETIME" || {
                for wl in $WORKLOADS; do printf '%s\t%s\t%s\t%s\t%s\tfail\n' "$mtu" "$target" "$wl" aoectl "$round" >>"$RESULTS"; done
                continue
            }
            for wl in $WORKLOADS; do
                run_one "$mtu" "$round" "$target" "$wl" aoectl
                case " $C_CLIENT_TARGETS " in *" $target "*) run_one "$mtu" "$round" "$target" "$wl" aoe-load ;; esac
            done
            stop_target
        done
    done
    first_mtu=0
done

# ---------------------------------------------------------------- the table
log "done; every row is the mean of $ROUNDS rounds of about ${DURATION} s"
for f in "$W"/target-*.log; do   # drops that the targets counted (aoe-target logs counters on exit)
    d=$(grep -o 'dropped_[a-z_]*=[0-9]*' "$f" 2>/dev/null | tr '\n' ' ')
    [ -n "$d" ] && echo "note: $(basename "$f" .log): $d"
done
echo
awk -F'\t' -v targets="fio/disk fio/rbd $TARGETS" -v workloads="$WORKLOADS" -v mtus="- $MTUS" -v rounds="$ROUNDS" '
function ref_vblade(t) {
    if (t == "aoe/tmpfs" || t == "null" || t == "cnull") return "vblade/tmpfs"
    if (t == "aoe/disk") return "vblade/disk-cached"
    if (t == "aoe/disk-direct") return "vblade/disk"
    if (t == "aoe/disk-sync" || t == "aoe/disk-direct-sync") return ("vblade/disk-sync" in seen) ? "vblade/disk-sync" : "vblade/disk"
    return ""
}
function ratio(a, b) { return (b > 0 && a != "") ? sprintf("%.2f", a / b) : "-" }
{
    k = $1 SUBSEP $2 SUBSEP $3 SUBSEP $4; seen[$2] = 1
    if ($6 != "ok") { fails[k]++; keys[k] = 1; next }
    keys[k] = 1; n[k]++; iops[k] += $7; mbps[k] += $8; p50[k] += $9; p99[k] += $10
    if ($11 != "nan") { cpu[k] += $11; ncpu[k]++ }
    retx[k] += $12; errs[k] += $13
    if (!(k in lo) || $7 < lo[k]) lo[k] = $7
    if (!(k in hi) || $7 > hi[k]) hi[k] = $7
}
END {
    for (k in n) { iops[k] /= n[k]; mbps[k] /= n[k]; p50[k] /= n[k]; p99[k] /= n[k] }
    hdr = sprintf("%-5s %-20s %-22s %-8s %9s %8s %7s %7s %8s %6s %6s %5s %5s %4s", "mtu", "target", "workload", "client",
        "IOPS", "MB/s", "p50us", "p99us", "CPUus/IO", "xvbl", "xnull", "retx", "err", "±%")
    print hdr; gsub(/./, "-", hdr); print hdr
    nm = split(mtus, M, " "); nt = split(targets, T, " "); nw = nreal = split(workloads, WL, " ")
    if (index(" " workloads " ", " 4k-randread-qd32 ") == 0) WL[++nw] = "4k-randread-qd32"
    if (index(" " workloads " ", " 4k-randwrite-qd32 ") == 0) WL[++nw] = "4k-randwrite-qd32"
    for (a = 1; a <= nm; a++) for (w = 1; w <= nw; w++) for (b = 1; b <= nt; b++) for (c = 1; c <= 3; c++) {
        client = c == 1 ? "aoectl" : c == 2 ? "aoe-load" : "fio"
        k = M[a] SUBSEP T[b] SUBSEP WL[w] SUBSEP client
        if (!(k in keys)) continue
        if (!(k in n)) { printf "%-5s %-20s %-22s %-8s %9s   (all %d runs failed)\n", M[a], T[b], WL[w], client, "FAIL", fails[k]; continue }
        rv = ref_vblade(T[b]); kv = M[a] SUBSEP rv SUBSEP WL[w] SUBSEP client
        kn = M[a] SUBSEP "null" SUBSEP WL[w] SUBSEP client
        xv = (rv != "" && kv in n) ? ratio(iops[k], iops[kv]) : "-"
        xn = (T[b] != "null" && kn in n) ? ratio(iops[k], iops[kn]) : "-"
        spread = iops[k] > 0 ? sprintf("%.0f", (hi[k] - lo[k]) * 100 / iops[k]) : "-"
        printf "%-5s %-20s %-22s %-8s %9.0f %8.1f %7.0f %7.0f %8s %6s %6s %5d %5d %4s%s\n", M[a], T[b], WL[w], client,
            iops[k], mbps[k], p50[k], p99[k], (k in ncpu) ? sprintf("%.1f", cpu[k] / ncpu[k]) : "-", xv, xn,
            retx[k], errs[k], spread, (k in fails) ? "  (" fails[k] " failed)" : ""
    }
    # before/after: the current binary against the baseline, row by row
    for (a = 1; a <= nm; a++) for (w = 1; w <= nreal; w++) for (b = 1; b <= nt; b++) {
        if (T[b] !~ /^base\//) continue
        cur = "aoe/" substr(T[b], 6)
        kb = M[a] SUBSEP T[b] SUBSEP WL[w] SUBSEP "aoectl"; kc = M[a] SUBSEP cur SUBSEP WL[w] SUBSEP "aoectl"
        if ((kb in n) && (kc in n) && iops[kb] > 0) {
            if (!hdr3++) print "\nbefore/after: IOPS of the current aoe-target / the --baseline binary, same run (1.00 = no change):"
            printf "  mtu %-5s %-16s %-22s %9.0f -> %9.0f  %.3f\n", M[a], cur, WL[w], iops[kb], iops[kc], iops[kc] / iops[kb]
        }
    }
    # the client cost: the same target driven by aoectl and by aoe-load
    for (a = 1; a <= nm; a++) for (w = 1; w <= nreal; w++) for (b = 1; b <= nt; b++) {
        ka = M[a] SUBSEP T[b] SUBSEP WL[w] SUBSEP "aoectl"; kc = M[a] SUBSEP T[b] SUBSEP WL[w] SUBSEP "aoe-load"
        if ((ka in n) && (kc in n) && iops[kc] > 0) {
            if (!hdr2++) print "\naoectl IOPS / aoe-load IOPS on the same target (below 1: aoectl is the bottleneck):"
            printf "  mtu %-5s %-14s %-22s %.2f\n", M[a], T[b], WL[w], iops[ka] / iops[kc]
        }
    }
}' "$RESULTS"

# ---------------------------------------------------------------- the goals, from the same means
# Issue 14's bounds at every MTU and workload of the run, then the earlier issues' (metrics cost, RBD, --sync).
echo
echo "goals (ratios of means from this run; PASS/GAP against the stated bound):"
awk -F'\t' -v mtus="$MTUS" -v workloads="$WORKLOADS" '
$6 == "ok" { k = $1 SUBSEP $2 SUBSEP $3 SUBSEP $4; n[k]++; iops[k] += $7; p50[k] += $9; if ($11 != "nan") { cpu[k] += $11; nc[k]++ } }
function mean(a, k) { return (k in n) ? a[k] / n[k] : "" }
function cpumean(k) { return (k in nc) ? cpu[k] / nc[k] : "" }
function goal(what, value, bound, higher) {
    if (value == "") { printf "  %-100s      -  (not measured)\n", what; return }
    printf "  %-100s %6.2f  %s (bound %s %.2f)\n", what, value, (higher ? value >= bound : value <= bound) ? "PASS" : "GAP ", higher ? ">=" : "<=", bound
}
function ratio(a, b) { return (a != "" && b != "" && b > 0) ? a / b : "" }
function io(m, t, w) { return mean(iops, m SUBSEP t SUBSEP w SUBSEP "aoectl") }
# The C client where the target has runs with it (the client is not the limit there), else aoectl.
function best(m, t, w,   c) { c = mean(iops, m SUBSEP t SUBSEP w SUBSEP "aoe-load"); return c != "" ? c : io(m, t, w) }
END {
    nm = split(mtus, M, " "); nw = split(workloads, WL, " ")
    for (a = 1; a <= nm; a++) {
        m = M[a]
        for (w = 1; w <= nw; w++) {
            wl = WL[w]; pre = "MTU " m " " wl ": "
            goal(pre "aoe/tmpfs / vblade/tmpfs", ratio(io(m, "aoe/tmpfs", wl), io(m, "vblade/tmpfs", wl)), 1.0, 1)
            goal(pre "aoe/disk / vblade/disk-cached (page cache)", ratio(io(m, "aoe/disk", wl), io(m, "vblade/disk-cached", wl)), 1.0, 1)
            goal(pre "aoe/tmpfs / null", ratio(io(m, "aoe/tmpfs", wl), io(m, "null", wl)), 0.9, 1)
            goal(pre "null / cnull (C batched null target; aoe-load)", ratio(best(m, "null", wl), best(m, "cnull", wl)), 0.95, 1)
            goal(pre "null / cnull, packet-ring goal (aoe-load)", ratio(best(m, "null", wl), best(m, "cnull", wl)), 1.2, 1)
            goal(pre "aoe/tmpfs / cnull, packet-ring goal (aoectl)", ratio(io(m, "aoe/tmpfs", wl), io(m, "cnull", wl)), 1.2, 1)
            goal(pre "null / null-recvmmsg (the receive ring against recvmmsg; aoe-load)", ratio(best(m, "null", wl), best(m, "null-recvmmsg", wl)), 1.0, 1)
            goal(pre "aoe/tmpfs / aoe/tmpfs-recvmmsg (the receive ring against recvmmsg)", ratio(io(m, "aoe/tmpfs", wl), io(m, "aoe/tmpfs-recvmmsg", wl)), 1.0, 1)
        }
        for (w = 1; w <= 2; w++) {
            wl = w == 1 ? "4k-randread-qd32" : "4k-randwrite-qd32"; pre = "MTU " m " " wl ": "
            goal(pre "aoe/disk-direct / local fio (libaio, O_DIRECT, same file and QD)", ratio(io(m, "aoe/disk-direct", wl), mean(iops, "-" SUBSEP "fio/disk" SUBSEP wl SUBSEP "fio")), 0.8, 1)
            goal(pre "CPU per I/O, aoe/tmpfs / vblade/tmpfs", ratio(cpumean(m SUBSEP "aoe/tmpfs" SUBSEP wl SUBSEP "aoectl"), cpumean(m SUBSEP "vblade/tmpfs" SUBSEP wl SUBSEP "aoectl")), 0.7, 0)
        }
        goal("MTU " m " 4k-randwrite-qd32: aoe/disk-direct-sync / aoe/disk-direct (--sync vs not)", ratio(io(m, "aoe/disk-direct-sync", "4k-randwrite-qd32"), io(m, "aoe/disk-direct", "4k-randwrite-qd32")), 0.5, 1)
        goal("MTU " m " 4k-randread-qd1: p50 latency, aoe/tmpfs / vblade/tmpfs", ratio(mean(p50, m SUBSEP "aoe/tmpfs" SUBSEP "4k-randread-qd1" SUBSEP "aoectl"), mean(p50, m SUBSEP "vblade/tmpfs" SUBSEP "4k-randread-qd1" SUBSEP "aoectl")), 1.0, 0)
        goal("MTU " m " 4k-randread-qd1: p50 latency, aoe/disk-direct / vblade/disk", ratio(mean(p50, m SUBSEP "aoe/disk-direct" SUBSEP "4k-randread-qd1" SUBSEP "aoectl"), mean(p50, m SUBSEP "vblade/disk" SUBSEP "4k-randread-qd1" SUBSEP "aoectl")), 1.0, 0)
    }
    for (w = 1; w <= 2; w++) {
        wl = w == 1 ? "4k-randread-qd32" : "4k-randwrite-qd32"
        goal("MTU 1500 " wl ": aoe/tmpfs-metrics / aoe/tmpfs (metrics on vs off)", ratio(io(1500, "aoe/tmpfs-metrics", wl), io(1500, "aoe/tmpfs", wl)), 0.97, 1)
        fr = mean(iops, "-" SUBSEP "fio/rbd" SUBSEP wl SUBSEP "fio")
        goal("MTU 1500 " wl ": aoe/rbd / fio/rbd (local librbd, same QD; aoectl)", ratio(io(1500, "aoe/rbd", wl), fr), 0.9, 1)
        goal("MTU 1500 " wl ": aoe/rbd / fio/rbd (local librbd, same QD; aoe-load)", ratio(mean(iops, 1500 SUBSEP "aoe/rbd" SUBSEP wl SUBSEP "aoe-load"), fr), 0.9, 1)
    }
    goal("MTU 1500 4k-randwrite-qd32: aoe/disk-sync / aoe/disk (page cache; --sync vs not)", ratio(io(1500, "aoe/disk-sync", "4k-randwrite-qd32"), io(1500, "aoe/disk", "4k-randwrite-qd32")), 0.5, 1)
}' "$RESULTS"
if [ -s "$W/rss.tsv" ]; then
    echo
    echo "peak resident memory (VmHWM) of each target process, KiB, largest over its runs:"
    awk -F'\t' '{ if (!($1 in m) || $2 > m[$1]) m[$1] = $2 } END { for (k in m) printf "  %-24s %8d\n", k, m[k] }' "$W/rss.tsv" | sort
fi

# ---------------------------------------------------------------- results.json and the chart
if [ "$QUICK" = 1 ]; then OUT=${OUT:-$W}; else OUT=${OUT:-$REPO/Benchmarks/results}; fi
mkdir -p "$OUT"
jq -R -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg rounds "$ROUNDS" --arg duration "$DURATION" '
    { date: $date, rounds: ($rounds | tonumber), seconds_per_run: ($duration | tonumber),
      runs: [ split("\n")[] | select(length > 0) | split("\t")
              | { mtu: .[0], target: .[1], workload: .[2], client: .[3], round: (.[4] | tonumber), status: .[5] }
                + (if .[5] == "ok" then { iops: (.[6] | tonumber), mbps: (.[7] | tonumber), p50_us: (.[8] | tonumber),
                     p99_us: (.[9] | tonumber), cpu_us_per_io: (.[10] | tonumber? // null),
                     retransmits: (.[11] | tonumber? // null), errors: (.[12] | tonumber? // null) } else {} end) ] }' \
    "$RESULTS" >"$OUT/results.json"
# Mean IOPS of the aoectl runs (fio for fio/disk), one row per MTU and workload, one column per target.
jq -r '
    [ .runs[] | select(.status == "ok" and (.client == "aoectl" or .client == "fio")) ] as $ok
    | ($ok | map(.target) | unique) as $targets
    | ("workload\t" + ($targets | join("\t"))),
      ( $ok | group_by([.mtu, .workload])[]
        | . as $g
        | ("\(.[0].workload) (\(if .[0].mtu == "-" then "local" else "MTU \(.[0].mtu)" end))\t" + ([ $targets[] as $t | ([ $g[] | select(.target == $t) | .iops ] | if length > 0 then add / length else "NaN" end) | tostring ] | join("\t"))) )' \
    "$OUT/results.json" >"$W/means.tsv"
columns=$(head -1 "$W/means.tsv" | awk -F'\t' '{ print NF }')
gnuplot <<GNUPLOT 2>"$W/gnuplot.err" || log "gnuplot failed: $(cat "$W/gnuplot.err")"
set terminal svg size 1100,520 dynamic font "sans,11"
set output "$OUT/iops.svg"
set datafile separator "\t"
set datafile missing "NaN"
set title "aoe-target, vblade and a null target: mean IOPS over $ROUNDS rounds (higher is better)"
set style data histograms
set style histogram clustered gap 2
set style fill solid 0.85 border -1
set ylabel "IOPS"
set yrange [0:*]
set grid ytics
set key outside right top
set xtics rotate by -20 left
plot for [i=2:$columns] "$W/means.tsv" using i:xtic(1) title columnheader(i)
GNUPLOT
log "results: $OUT/results.json, chart: $OUT/iops.svg$([ "$OUT" = "$W" ] && [ "$KEEP" = 0 ] && echo " (scratch: removed on exit; --keep or --out DIR keeps them)")"
log "total time $(( $(date +%s) - T_START )) s"
