# Sourced by the RBD tests: a throw-away one-node Ceph cluster (monitor a, manager x, BlueStore OSD 0 on an
# 8 GiB sparse file) that lives entirely under one directory, listens on 127.0.0.1 only and has no auth.
# For loopback test clusters only. Functions only: sourcing this file changes nothing else.
#
#   ceph_available || skip "ceph not installed"
#   trap ceph_stop EXIT
#   ceph_start "$WORK/ceph" "$NS" || exit 1     # NS optional: an existing network namespace with lo up
#   ceph_image_create disk0 256M && ceph_rbd info rbd/disk0
#
# One cluster per shell: its state is CEPH_DIR, CEPH_NS and CEPH_PIDS. Without NS the monitor's ports
# (127.0.0.1:3300 and :6789) are fixed, so only one such cluster can run outside namespaces at a time.
# CEPH_TIMEOUT (seconds, default 60) bounds each ceph_cli / ceph_rbd call.

CEPH_DIR=${CEPH_DIR:-}
CEPH_NS=${CEPH_NS:-}
CEPH_PIDS=${CEPH_PIDS:-}

# ceph_available: 0 when the daemons and CLIs that ceph_start runs are all on PATH.
ceph_available() {
    local t
    for t in ceph-mon ceph-osd ceph-mgr ceph rbd monmaptool timeout; do
        command -v "$t" >/dev/null 2>&1 || return 1
    done
}

# _ceph_timed SECS CMD...: CMD killed after SECS, run in the cluster's namespace when there is one
# (ip netns exec execs CMD, so timeout's signal reaches CMD itself).
_ceph_timed() {
    local secs=$1; shift
    if [ -n "$CEPH_NS" ]; then set -- ip netns exec "$CEPH_NS" "$@"; fi
    timeout -k 5 "$secs" "$@"
}

# ceph_cli ARGS...: the ceph CLI against this cluster, bounded in time.
ceph_cli() {
    [ -n "$CEPH_DIR" ] || { echo "ceph_cli: no cluster started" >&2; return 1; }
    _ceph_timed "${CEPH_TIMEOUT:-60}" ceph -c "$CEPH_DIR/ceph.conf" --connect-timeout 10 "$@"
}

# ceph_rbd ARGS...: the rbd CLI against this cluster, bounded in time.
ceph_rbd() {
    [ -n "$CEPH_DIR" ] || { echo "ceph_rbd: no cluster started" >&2; return 1; }
    _ceph_timed "${CEPH_TIMEOUT:-60}" rbd -c "$CEPH_DIR/ceph.conf" "$@"
}

# ceph_image_create NAME SIZE: a new image rbd/NAME of SIZE (e.g. 256M, 1G).
ceph_image_create() {
    ceph_rbd create "rbd/$1" --size "$2"
}

# _ceph_write_conf DIR FSID: the config; every path under DIR so nothing touches /var/lib/ceph or /etc/ceph.
_ceph_write_conf() {
    local d=$1 fsid=$2
    cat >"$d/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv4 = true
ms_bind_ipv6 = false
# loopback test cluster only
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = $d/keyring
run_dir = $d/run
admin_socket = $d/run/\$cluster-\$name.asok
log_file = $d/log/\$cluster-\$name.log
mon_cluster_log_file = $d/log/\$cluster.log
crash_dir = $d/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
# without auth there is nothing to reclaim insecurely; keeps health at HEALTH_OK
mon_warn_on_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false

[mon]
pid_file = $d/run/\$cluster-\$name.pid
mon_data = $d/mon/\$cluster-\$id
# the disk of a test machine is often fuller than the 5 % / 30 % free a production monitor insists on
mon_data_avail_crit = 1
mon_data_avail_warn = 2
# restful (the default) would listen on all addresses once given a certificate
mgr_initial_modules = iostat

[mgr]
pid_file = $d/run/\$cluster-\$name.pid
mgr_data = $d/mgr/\$cluster-\$id

[osd]
pid_file = $d/run/\$cluster-\$name.pid
osd_data = $d/osd/\$cluster-\$id
osd_objectstore = bluestore
# no bluestore_block_path: left empty, mkfs creates the file osd_data/block itself (pointing the path
# there makes mkfs symlink block to itself: ELOOP)
bluestore_block_create = true
bluestore_block_size = 8589934592
osd_memory_target = 1073741824

[client]
# one socket per process: with the default name two clients on one host collide
admin_socket = $d/run/\$cluster-\$name.\$pid.asok
log_file = $d/log/\$cluster-\$name.log
rbd_cache = false
EOF
}

# _ceph_pids [WHAT]: PIDs of this cluster's daemons (WHAT: osd, mgr or mon; default all), from its pid files
# and CEPH_PIDS; a PID counts only while its process runs ceph-WHAT with this cluster's config on its
# command line, so a reused PID is never taken for ours.
_ceph_pids() {
    local what=${1:-} pid seen=" "
    [ -n "$CEPH_DIR" ] || return 0
    for pid in $(cat "$CEPH_DIR/run/ceph-$what"*.pid 2>/dev/null) $CEPH_PIDS; do
        case $pid in *[!0-9]* | "") continue ;; esac
        case $seen in *" $pid "*) continue ;; esac
        [ -r "/proc/$pid/cmdline" ] || continue
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CEPH_DIR/ceph.conf" || continue
        [ -z "$what" ] || grep -qx "ceph-$what" "/proc/$pid/comm" 2>/dev/null || continue
        seen="$seen$pid "
        echo "$pid"
    done
}

# _ceph_alive PID: 0 while PID runs. An unreaped zombie counts as ended; a daemon whose main thread has
# exited shows State Z too while its other threads still shut down, so that one still counts as running.
_ceph_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null || return 0
    set -- "/proc/$1/task"/*
    [ "$#" -gt 1 ]
}

# _ceph_end "PID...": SIGTERM, then SIGKILL to those still there after 10 s.
_ceph_end() {
    local pids=$1 pid i
    [ -n "$pids" ] || return 0
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
    for i in $(seq 150); do
        [ "$i" -eq 100 ] && for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
        pids=$(for pid in $pids; do _ceph_alive "$pid" && echo "$pid"; done)
        [ -n "$pids" ] || return 0
        sleep 0.1
    done
    echo "ceph_stop: could not end PIDs ${pids//$'\n'/ }" >&2
    return 1
}

# _ceph_kill: end the OSD first (it waits up to 5 s for a monitor to acknowledge its going down), then
# the manager and the monitor.
_ceph_kill() {
    _ceph_end "$(_ceph_pids osd)" || return 1
    _ceph_end "$(_ceph_pids)"
}

# _ceph_fail STEP LOG [DETAIL]: one line saying which step failed, the tail of LOG, then stop the daemons
# (CEPH_DIR stays for a look at the logs; ceph_stop removes it).
_ceph_fail() {
    echo "ceph_start: $1 failed${3:+: $3} (log: $2)" >&2
    [ -s "$2" ] && tail -n 20 "$2" | sed 's/^/    /' >&2
    _ceph_kill && CEPH_PIDS=
    return 1
}

# _ceph_step STEP LOG SECS CMD...: run CMD (bounded, in the namespace), its output appended to
# DIR/log/steps.log; on failure report STEP with the tail of LOG (the daemon log that tells why).
_ceph_step() {
    local step=$1 log=$2 secs=$3; shift 3
    echo "+ $*" >>"$CEPH_DIR/log/steps.log"
    if ! _ceph_timed "$secs" "$@" </dev/null >>"$CEPH_DIR/log/steps.log" 2>&1; then
        _ceph_fail "$step" "$log" "$(tail -n 1 "$CEPH_DIR/log/steps.log")"
        return 1
    fi
}

# _ceph_daemon TYPE ID: start a daemon (it forks into the background and writes its pid file) and wait up
# to 20 s for the pid file of a running process; its PID is added to CEPH_PIDS.
_ceph_daemon() {
    local name=$1.$2 pidf i pid
    pidf=$CEPH_DIR/run/ceph-$name.pid
    _ceph_step "start $name" "$CEPH_DIR/log/ceph-$name.log" 60 \
        "ceph-$1" -c "$CEPH_DIR/ceph.conf" -i "$2" || return 1
    for i in $(seq 200); do
        pid=$(cat "$pidf" 2>/dev/null)
        if [ -n "$pid" ] && _ceph_alive "$pid"; then
            CEPH_PIDS="${CEPH_PIDS:+$CEPH_PIDS }$pid"
            return 0
        fi
        sleep 0.1
    done
    _ceph_fail "start $name (no running process in $pidf)" "$CEPH_DIR/log/ceph-$name.log"
}

# _ceph_wait STEP LOG SECS CMD...: retry CMD (each try bounded) until it succeeds or SECS have passed.
_ceph_wait() {
    local step=$1 log=$2 secs=$3 end; shift 3
    end=$((SECONDS + secs))
    until _ceph_timed 15 "$@" </dev/null >>"$CEPH_DIR/log/steps.log" 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            _ceph_fail "$step (not within $secs s)" "$log"
            return 1
        fi
        sleep 0.5
    done
}

# ceph_start DIR [NS]: a new cluster under DIR (absent or empty) with pool rbd ready for images, its
# daemons (and ceph_cli/ceph_rbd) inside network namespace NS when given; exports CEPH_CONF and sets
# CEPH_PIDS. On failure: one line naming the failed step and the tail of its log on stderr, the daemons
# stopped, return 1.
ceph_start() {
    local dir=${1:-} ns=${2:-} fsid uuid id conf
    if [ -n "$CEPH_DIR" ]; then
        echo "ceph_start: a cluster is already running in $CEPH_DIR (ceph_stop first)" >&2; return 1
    fi
    [ -n "$dir" ] || { echo "ceph_start: usage: ceph_start DIR [NS]" >&2; return 1; }
    ceph_available || { echo "ceph_start: ceph-mon, ceph-osd, ceph-mgr, ceph, rbd, monmaptool or timeout not on PATH" >&2; return 1; }
    dir=$(realpath -m -- "$dir")
    if [ "$dir" = / ] || { [ -e "$dir" ] && [ -n "$(ls -A -- "$dir" 2>/dev/null)" ]; }; then
        echo "ceph_start: $dir must be absent or empty" >&2; return 1
    fi
    if [ -n "$ns" ] && ! ip netns exec "$ns" true 2>/dev/null; then
        echo "ceph_start: network namespace $ns not usable" >&2; return 1
    fi
    mkdir -p "$dir"/{run,log,crash,mon/ceph-a,mgr/ceph-x,osd/ceph-0} || {
        echo "ceph_start: cannot create $dir" >&2; return 1; }
    : >"$dir/.ceph-cluster"          # marks DIR as ours, so ceph_stop may remove it
    CEPH_DIR=$dir CEPH_NS=$ns CEPH_PIDS=''
    conf=$dir/ceph.conf
    fsid=$(cat /proc/sys/kernel/random/uuid)
    _ceph_write_conf "$dir" "$fsid"

    _ceph_step "create monmap" "$dir/log/steps.log" 20 monmaptool --create --fsid "$fsid" \
        --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$dir/monmap" || return 1
    _ceph_step "mkfs mon.a" "$dir/log/ceph-mon.a.log" 60 \
        ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" || return 1
    _ceph_daemon mon a || return 1
    _ceph_wait "monitor up" "$dir/log/ceph-mon.a.log" 30 \
        ceph -c "$conf" --connect-timeout 5 mon stat || return 1
    _ceph_daemon mgr x || return 1

    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(_ceph_timed 20 ceph -c "$conf" --connect-timeout 10 osd new "$uuid" 2>>"$dir/log/steps.log")
    if [ "$id" != 0 ]; then
        _ceph_fail "ceph osd new (got id '$id', want 0)" "$dir/log/ceph-mon.a.log"; return 1
    fi
    _ceph_step "mkfs osd.0" "$dir/log/ceph-osd.0.log" 120 \
        ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" || return 1
    _ceph_daemon osd 0 || return 1
    # shellcheck disable=SC2016 # $1 is expanded by sh, not here
    _ceph_wait "osd.0 up" "$dir/log/ceph-osd.0.log" 60 \
        sh -c 'ceph -c "$1" --connect-timeout 10 osd dump | grep -q "^osd\.0 up "' sh "$conf" || return 1

    _ceph_step "create pool rbd" "$dir/log/ceph-mon.a.log" 60 \
        ceph -c "$conf" --connect-timeout 10 osd pool create rbd 8 8 replicated || return 1
    _ceph_step "rbd pool init rbd" "$dir/log/ceph-osd.0.log" 60 rbd -c "$conf" pool init rbd || return 1
    export CEPH_CONF=$conf
}

# ceph_stop: stop this cluster's daemons (by the PIDs in its pid files: SIGTERM, SIGKILL after 10 s) and
# remove its directory. Safe to call twice or after a failed ceph_start.
ceph_stop() {
    local rc=0
    [ -n "$CEPH_DIR" ] || return 0
    _ceph_kill || rc=1
    if [ "$rc" -eq 0 ] && [ -e "$CEPH_DIR/.ceph-cluster" ]; then rm -rf -- "$CEPH_DIR"; fi
    [ "${CEPH_CONF:-}" = "$CEPH_DIR/ceph.conf" ] && unset CEPH_CONF
    [ "$rc" -eq 0 ] && CEPH_DIR='' CEPH_NS='' CEPH_PIDS=''
    return "$rc"
}
