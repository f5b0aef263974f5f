# shellcheck shell=bash
# Shared helpers for the interop tests in this folder. Source it; do not run it.
#
#   it_need_root / need_tool / it_need_files      SKIP (exit 77) when something is missing
#   it_workdir NAME                               scratch folder /tmp/interop-NAME-XXXXXX
#   it_on_exit CMD                                run CMD on exit (LIFO), also on failure/signal
#   it_net_setup MTU                              namespace + bridge + veth (target) + tap (QEMU)
#   it_target_start SHIFT SHELF SLOT IMAGE        start $TARGET (vblade syntax) inside the namespace
#   it_initramfs_base                             cached busybox+modules+fio+mke2fs initramfs
#                                                 (sets IT_INITRAMFS_BASE)
#   it_cpio_dir DIR OUT                           newc cpio of a folder
#   it_qemu_run TIMEOUT SERIAL_LOG TAG ARGS...    one QEMU (TCG) in the namespace, bounded in time
#   it_marker_lines SERIAL_LOG TAG                the guest's marker lines, CR stripped
#
# Safety: every frame stays inside a namespace this file creates (`ip netns add`); the host's own
# interfaces are never touched. Everything started is killed by PID and the namespace deleted on exit.

IT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IT_REPO=$(cd "$IT_DIR/../.." && pwd)
IT_CACHE=${IT_CACHE:-$IT_REPO/.build-interop}
IT_QEMU=${IT_QEMU:-qemu-system-x86_64}
IT_CLEANUP=()
IT_NS=""
IT_TARGET_PID=""
IT_WORK=""
IT_KEEP=${KEEP:-0}
IT_KEEP_ON_FAIL=${IT_KEEP_ON_FAIL:-1}   # the negative wrappers set 0: their failures are expected
IT_FAILED=0

it_log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
it_pass() { printf 'PASS: %s\n' "$*"; }
# it_fail "[class] reason": class is data (wrong bytes / wrong place), target (no answer, crash,
# protocol) or infra (the harness itself). The RESULT line names the worst class seen.
IT_FAIL_CLASSES=""
it_fail() {
    printf 'FAIL: %s\n' "$*"
    IT_FAILED=1
    case "$*" in
        "[data]"*) IT_FAIL_CLASSES+=" data" ;;
        "[target]"*) IT_FAIL_CLASSES+=" target" ;;
        *) IT_FAIL_CLASSES+=" infra" ;;
    esac
}

# Print the closing RESULT line and exit 0 (pass) or 1 (fail).
it_result() {
    if [ "$IT_FAILED" = 0 ]; then
        echo "RESULT: PASS"
        exit 0
    fi
    local c
    for c in data target infra; do
        case " $IT_FAIL_CLASSES " in *" $c "*) echo "RESULT: FAIL $c"; exit 1 ;; esac
    done
    echo "RESULT: FAIL infra"
    exit 1
}

it_skip() {
    printf '\n************************************************************\n' >&2
    printf 'SKIP: %s\n' "$*" >&2
    printf '************************************************************\n\n' >&2
    exit 77
}

# Infrastructure error (not a verdict on the target): exit 1 with a reason.
it_die() {
    IT_FAILED=1
    printf 'FAIL: [infra] %s\n' "$*" >&2
    printf 'RESULT: FAIL infra\n'
    exit 1
}

it_need_root() { [ "$(id -u)" = 0 ] || it_skip "must run as root (creates a network namespace and a tap device)"; }

# need_tool TOOL...: see ../lib/need.sh
# shellcheck source=../lib/need.sh
. "$IT_DIR/../lib/need.sh"

it_need_files() {
    local f
    for f in "$@"; do
        [ -e "$f" ] || it_skip "missing file: $f"
    done
}

# it_run_negative INNER_SCRIPT PATTERN...: runs INNER_SCRIPT (env as given, e.g. SHIFT=4) and exits
# 0 only if it failed for a data reason: exit 1, "RESULT: FAIL data", no [target]/[infra] failure,
# and every extended-regex PATTERN found in its output. Exit 77 if it skipped, 1 otherwise.
it_run_negative() {
    local inner=$1 log rc p missing=""
    shift
    log=$(mktemp /tmp/interop-negative-XXXXXX.log)
    it_on_exit "rm -f $log"
    IT_KEEP_ON_FAIL=0 bash "$inner" 2>&1 | tee "$log" | sed -u 's/^/  inner| /'
    rc=${PIPESTATUS[0]}
    echo "== negative verdict (inner exit status $rc)"
    [ "$rc" = 77 ] && it_skip "inner test skipped: $(grep -m1 '^SKIP:' "$log")"
    if [ "$rc" = 0 ]; then
        it_fail "[data] the inner test PASSED against a deliberately wrong target: its checks are blind"
        it_result
    fi
    grep -E '^FAIL: \[data\]' "$log" | sed 's/^FAIL: /  caught: /'
    if [ "$rc" != 1 ]; then
        it_fail "[infra] inner test exited $rc (expected 1)"
    elif ! grep -qx 'RESULT: FAIL data' "$log"; then
        it_fail "[infra] inner test failed, but not for a data reason: $(grep -m1 '^RESULT:' "$log")"
    elif grep -qE '^FAIL: \[(target|infra)\]' "$log"; then
        it_fail "[infra] inner test also failed for a non-data reason: $(grep -m1 -E '^FAIL: \[(target|infra)\]' "$log")"
    fi
    for p in "$@"; do
        grep -qE -- "$p" "$log" || missing+=" '$p'"
    done
    [ -z "$missing" ] || it_fail "[infra] expected failure lines not found:$missing"
    if [ "$IT_FAILED" = 0 ]; then
        it_pass "the inner test failed for data reasons, as it must against a wrong target"
        echo "RESULT: PASS"
        exit 0
    fi
    # a negative that did not work is a harness problem, whatever the inner class was
    echo "RESULT: FAIL infra"
    exit 1
}

# ---------------------------------------------------------------- cleanup

it_on_exit() { IT_CLEANUP+=("$1"); }

it__run_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM HUP
    for ((i = ${#IT_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${IT_CLEANUP[i]}" >/dev/null 2>&1 || true
    done
    exit "$rc"
}
trap it__run_cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'echo "terminated" >&2; exit 143' TERM HUP

# Kill one process we started, by PID: TERM, up to 5 s, then KILL.
it_kill_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

# Scratch folder; removed on success, kept (minus big images unless KEEP=1) on failure
# (unless IT_KEEP_ON_FAIL=0).
it_workdir() {
    IT_WORK=$(mktemp -d "/tmp/interop-$1-XXXXXX") || it_die "mktemp failed"
    it_on_exit it__workdir_cleanup
}

it__workdir_cleanup() {
    [ -n "$IT_WORK" ] && [ -d "$IT_WORK" ] || return 0
    if [ "$IT_KEEP" != 1 ] && { [ "$IT_FAILED" = 0 ] || [ "$IT_KEEP_ON_FAIL" = 0 ]; }; then
        rm -rf "$IT_WORK"
    else
        [ "$IT_KEEP" = 1 ] || rm -f "$IT_WORK"/*.img "$IT_WORK"/initrd*
        echo "artefacts kept in $IT_WORK" >&2
    fi
}

it_nonce() { od -An -N4 -tx1 /dev/urandom | tr -d ' \n'; }

# ---------------------------------------------------------------- network

it_ns() { ip netns exec "$IT_NS" "$@"; }

# it_net_setup MTU: namespace with br0 <- vtgt-br/vtgt (target side) and tap0 (QEMU side).
# Sets IT_NS, IT_TGT_IF=vtgt, IT_TAP=tap0.
it_net_setup() {
    local mtu=$1 d
    IT_NS="aoeit-$$-$(it_nonce | cut -c1-4)"
    IT_TGT_IF=vtgt
    IT_TAP=tap0
    ip netns add "$IT_NS" 2>/dev/null || it_skip "cannot create a network namespace (ip netns add)"
    it_on_exit it__net_teardown
    # IPv6 off so the test network carries only what the test sends.
    it_ns sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
    it_ns ip link set lo up
    it_ns ip link add br0 type bridge stp_state 0 forward_delay 0 || it_die "bridge creation failed"
    it_ns ip link add "$IT_TGT_IF" type veth peer name "$IT_TGT_IF-br" || it_die "veth creation failed"
    it_ns ip tuntap add dev "$IT_TAP" mode tap || it_die "tap creation failed"
    for d in "$IT_TGT_IF" "$IT_TGT_IF-br" "$IT_TAP"; do
        it_ns ip link set "$d" mtu "$mtu" || it_die "cannot set MTU $mtu on $d"
    done
    it_ns ip link set "$IT_TGT_IF-br" master br0
    it_ns ip link set "$IT_TAP" master br0
    it_ns ip link set br0 mtu "$mtu" || it_die "cannot set MTU $mtu on br0"
    for d in br0 "$IT_TGT_IF" "$IT_TGT_IF-br" "$IT_TAP"; do
        it_ns ip link set "$d" up
    done
    it_log "network: namespace $IT_NS, br0 + $IT_TGT_IF(-br) + $IT_TAP, MTU $mtu"
}

it__net_teardown() {
    [ -n "$IT_NS" ] || return 0
    ip netns exec "$IT_NS" ip link del "$IT_TAP" 2>/dev/null
    ip netns exec "$IT_NS" ip link del "$IT_TGT_IF" 2>/dev/null
    ip netns exec "$IT_NS" ip link del br0 2>/dev/null
    ip netns del "$IT_NS" 2>/dev/null
    IT_NS=""
}

# Optional capture on the target's veth (CAPTURE=1): $IT_WORK/target.pcap
it_capture_start() {
    [ "${CAPTURE:-0}" = 1 ] || return 0
    command -v tcpdump >/dev/null || { it_log "CAPTURE=1 but no tcpdump"; return 0; }
    it_ns tcpdump -U --immediate-mode -i "$IT_TGT_IF" -w "$IT_WORK/target.pcap" >"$IT_WORK/tcpdump.log" 2>&1 &
    local pid=$!
    it_on_exit "it_kill_pid $pid"
    it_log "capturing $IT_TGT_IF to $IT_WORK/target.pcap"
}

# ---------------------------------------------------------------- target

# Resolve $TARGET: explicit command/path, else .build/debug/aoe-target. Sets IT_TARGET (absolute).
it_resolve_target() {
    local t=${TARGET:-}
    if [ -z "$t" ]; then
        t=$IT_REPO/.build/debug/aoe-target
        if [ ! -x "$t" ]; then
            printf 'ERROR: TARGET is not set and %s is not built.\n' "$t" >&2
            printf '       Run `swift build` first, or e.g. TARGET=vblade %s\n' "$0" >&2
            printf 'RESULT: FAIL infra\n'
            exit 1
        fi
    fi
    case "$t" in */*) t=$(realpath -e "$t" 2>/dev/null || echo "$t") ;; esac
    IT_TARGET=$(command -v "$t" 2>/dev/null) || {
        printf 'ERROR: TARGET=%s is not an executable\n' "$t" >&2
        printf 'RESULT: FAIL infra\n'
        exit 1
    }
}

# it_target_start SHIFT SHELF SLOT IMAGE -- vblade syntax: [-o SHIFT] SHELF SLOT IFACE IMAGE
it_target_start() {
    local shift=$1 shelf=$2 slot=$3 image=$4
    local args=()
    [ -n "$shift" ] && [ "$shift" != 0 ] && args+=(-o "$shift")
    args+=("$shelf" "$slot" "$IT_TGT_IF" "$image")
    it_log "target: $IT_TARGET ${args[*]}"
    # `ip netns exec` execs the command, so $! is the target itself.
    ip netns exec "$IT_NS" "$IT_TARGET" "${args[@]}" >"$IT_WORK/target.log" 2>&1 </dev/null &
    IT_TARGET_PID=$!
    it_on_exit "it_kill_pid $IT_TARGET_PID"
    sleep 1
    it_target_alive || { sed 's/^/  target| /' "$IT_WORK/target.log"; it_die "target exited at start"; }
}

it_target_alive() { [ -n "$IT_TARGET_PID" ] && kill -0 "$IT_TARGET_PID" 2>/dev/null; }

# ---------------------------------------------------------------- guest kernel + initramfs

# Guest kernel: KVER env, else the newest /boot/vmlinuz-* that has a modules.dep.
it_pick_kernel() {
    IT_KVER=$(guest_kernel_version)
    [ -n "$IT_KVER" ] || it_skip "no /boot/vmlinuz-* with /lib/modules/*/modules.dep (apt-get install linux-image-amd64)"
    IT_KERNEL=/boot/vmlinuz-$IT_KVER
    IT_MODDIR=/lib/modules/$IT_KVER
    [ -r "$IT_KERNEL" ] || it_skip "cannot read $IT_KERNEL"
}

# shellcheck source=../lib/guest-image.sh
. "$IT_DIR/../lib/guest-image.sh"
# it_mod_resolve NAME... -> module paths (relative to $IT_MODDIR), dependencies first, each once.
it_mod_resolve() { guest_mod_resolve "$IT_MODDIR" "$@"; }
# Copy binary $1 to $2 (path inside root $3) plus every library ldd lists, at the same paths.
it__copy_with_libs() { guest_copy_with_libs "$@"; }
it_cpio_dir() { guest_cpio_dir "$@"; }

# Modules the guest loads at boot (aoe is loaded by the test itself, with its parameters).
IT_GUEST_BOOT_MODULES="virtio_pci virtio_net crc32c_generic ext4"
IT_GUEST_EXTRA_MODULES="aoe"

# it_initramfs_base: builds (or reuses) the common initramfs; sets IT_INITRAMFS_BASE to its path.
# Contents: busybox-static (+ applet links), /init, modules (boot ones listed in /etc/modules.boot,
# in load order), aoe.ko at /lib/modules/aoe.ko, fio and mke2fs (as mke2fs.e2fs) with their
# libraries. The test adds its own files as a second cpio appended to this one.
it_initramfs_base() {
    local busybox fio mke2fs key out stage pid rc
    busybox=$(command -v busybox)
    fio=$(command -v fio)
    mke2fs=$(command -v mke2fs)
    ldd "$busybox" 2>&1 | grep -qE 'not a dynamic executable|statically linked' ||
        it_skip "busybox is not statically linked (apt-get install busybox-static)"
    mkdir -p "$IT_CACHE"
    key=$( {
        echo "v4 $IT_KVER $IT_GUEST_BOOT_MODULES $IT_GUEST_EXTRA_MODULES"
        declare -f it__initramfs_build it__copy_with_libs it__guest_init
        ls -lL "$busybox" "$fio" "$mke2fs" "$IT_MODDIR/modules.dep" /etc/mke2fs.conf 2>/dev/null
        ldd "$fio" "$mke2fs" 2>/dev/null | awk '/=> \//{print $3}' | xargs ls -lL 2>/dev/null
    } | sha256sum | cut -c1-16)
    out=$IT_CACHE/initramfs-base-$key.cpio
    # one builder at a time; a second caller waits and then finds the cached file
    exec 8>"$IT_CACHE/.initramfs.lock"
    flock -w 300 8 || it_die "initramfs cache lock busy for 300 s"
    if [ ! -s "$out" ]; then
        it_log "building initramfs base $out (once; cached)"
        stage=$(mktemp -d "$IT_CACHE/stage-XXXXXX")
        it_on_exit "rm -rf '$stage' '$out.tmp'"
        it__initramfs_build "$stage" "$out.tmp" "$busybox" "$fio" "$mke2fs" &
        pid=$!
        it_on_exit "it_kill_pid $pid"
        wait "$pid"
        rc=$?
        rm -rf "$stage"
        [ "$rc" = 0 ] && [ -s "$out.tmp" ] || it_die "initramfs build failed"
        mv "$out.tmp" "$out"
        # keep only the newest few
        ls -t "$IT_CACHE"/initramfs-base-*.cpio 2>/dev/null | tail -n +4 | xargs -r rm -f
    fi
    flock -u 8
    exec 8>&-
    IT_INITRAMFS_BASE=$out
}

it__initramfs_build() {
    local stage=$1 out=$2 busybox=$3 fio=$4 mke2fs=$5 a m
    set -e
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,etc,lib/modules,root}
    cp "$busybox" "$stage/bin/busybox"
    for a in $("$busybox" --list); do
        [ -e "$stage/bin/$a" ] || ln -s busybox "$stage/bin/$a"
    done
    it__copy_with_libs "$fio" /usr/bin/fio "$stage"
    it__copy_with_libs "$mke2fs" /usr/sbin/mke2fs.e2fs "$stage"
    if [ -f /etc/mke2fs.conf ]; then cp /etc/mke2fs.conf "$stage/etc/"; fi
    : >"$stage/etc/modules.boot"
    local boot extra
    boot=$(it_mod_resolve $IT_GUEST_BOOT_MODULES)
    extra=$(it_mod_resolve $IT_GUEST_EXTRA_MODULES)
    for m in $boot; do
        cp "$IT_MODDIR/$m" "$stage/lib/modules/"
        basename "$m" >>"$stage/etc/modules.boot"
    done
    for m in $extra; do
        cp "$IT_MODDIR/$m" "$stage/lib/modules/"
    done
    it__guest_init >"$stage/init"
    chmod 755 "$stage/init"
    it_cpio_dir "$stage" "$out"
}

# The guest's /init: mount, load boot modules, run /test/run.sh (added by the test), power off.
it__guest_init() {
    cat <<'EOF'
#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $(cat /etc/modules.boot); do
    insmod /lib/modules/$m || echo "init: insmod $m failed"
done
if [ -x /test/run.sh ]; then
    /test/run.sh
else
    echo "init: no /test/run.sh"
fi
sync
poweroff -f
EOF
}

# ---------------------------------------------------------------- QEMU

# One QEMU at a time on this machine (see guest_qemu_lock).
it_qemu_lock() { guest_qemu_lock || it_die "QEMU lock: see the line above"; }

# it_qemu_run TIMEOUT SERIAL_LOG TAG QEMU_ARGS...
# Runs QEMU (TCG, no display, serial to SERIAL_LOG) inside the namespace, killed after TIMEOUT s.
# Streams the guest's lines containing TAG while it runs (all serial lines with VERBOSE=1).
# Returns QEMU's exit status (124/137 on timeout).
it_qemu_run() {
    local tmo=$1 log=$2 tag=$3 rc pid tpid
    shift 3
    it_qemu_lock
    : >"$log"
    ip netns exec "$IT_NS" timeout -k 5 "$tmo" "$IT_QEMU" -accel tcg -nodefaults -no-user-config \
        -display none -monitor none -serial "file:$log" -no-reboot "$@" \
        >"$log.qemu-out" 2>&1 </dev/null &
    pid=$!
    it_on_exit "it_kill_pid $pid"
    if [ "${VERBOSE:-0}" = 1 ]; then
        tail -n +1 -F --pid="$pid" "$log" 2>/dev/null | sed -u 's/\r//g; s/^/  serial| /' &
    else
        tail -n +1 -F --pid="$pid" "$log" 2>/dev/null | sed -u 's/\r//g' | grep --line-buffered -F "$tag" | sed -u 's/^/  guest| /' &
    fi
    tpid=$!
    it_on_exit "it_kill_pid $tpid"
    wait "$pid"
    rc=$?
    sleep 0.3
    it_kill_pid "$tpid"
    flock -u 9
    if [ -s "$log.qemu-out" ]; then
        sed 's/^/  qemu| /' "$log.qemu-out"
    fi
    return "$rc"
}

# Marker lines of the guest (CR stripped), the TAG itself removed.
it_marker_lines() { tr -d '\r' <"$1" | grep -F "$2" | sed "s/^.*$2 *//"; }

# it_guest_verdicts SERIAL_LOG TAG QEMU_EXIT: one PASS/FAIL per CHECK line of a guest that reports through
# guest-report.sh, and a failure when its RESULT line never came.
it_guest_verdicts() {
    local lines l
    lines=$(it_marker_lines "$1" "$2")
    while IFS= read -r l; do
        if [[ $l =~ ^CHECK\ (PASS|FAIL)\ ([a-z]+)\ (.*)$ ]]; then
            [ "${BASH_REMATCH[1]}" = PASS ] && it_pass "guest ${BASH_REMATCH[3]}" || it_fail "[${BASH_REMATCH[2]}] guest ${BASH_REMATCH[3]}"
        fi
    done <<<"$lines"
    grep -q '^RESULT ' <<<"$lines" || { it_fail "[target] guest did not finish (QEMU exit $3)"; tr -d '\r' <"$1" | tail -n 20 | sed 's/^/  serial| /'; }
}
