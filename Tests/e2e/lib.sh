# Shared by the end-to-end tests: a private network namespace with a bridge, one veth for the target and
# two for initiators, all removed on exit (also on failure). Frames never leave the namespace.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${AOE_BIN:-$ROOT/.build/debug}
NS=aoe-e2e-$$
WORK=$(mktemp -d /tmp/aoe-e2e.XXXXXX)
PIDS=()
FAILURES=0

# Results go to fd 3 so a check whose command's output is redirected still reports.
exec 3>&1
skip() { echo "SKIP: $*" >&3; exit 77; }
fail() { echo "FAIL: $*" >&3; FAILURES=$((FAILURES + 1)); }
pass() { echo "ok: $*" >&3; }
check() { # check DESCRIPTION COMMAND...: pass when the command succeeds
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, raw sockets)"
. "$ROOT/Tests/lib/need.sh"
need_tool ip jq
[ -x "$BIN/aoe-target" ] && [ -x "$BIN/aoectl" ] || skip "build first: swift build"

cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    ip netns del "$NS" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

in_ns() { ip netns exec "$NS" "$@"; }

# net_up [MTU]: bridge br0; target port t0, initiator ports i0 and i1.
net_up() {
    local mtu=${1:-1500}
    ip netns add "$NS"
    in_ns ip link set lo up
    in_ns ip link add br0 type bridge
    in_ns ip link set br0 mtu "$mtu" up
    for port in t0 i0 i1; do
        in_ns ip link add "$port" type veth peer name "${port}b"
        in_ns ip link set "${port}b" master br0
        in_ns ip link set "${port}b" mtu "$mtu" up
        in_ns ip link set "$port" mtu "$mtu" up
    done
}

mac_of() { in_ns cat "/sys/class/net/$1/address"; }

# start_target LOGFILE ARGS...: runs aoe-target (or $TARGET_CMD) in the namespace; waits until it announced.
start_target() {
    local log=$1; shift
    # ip netns exec execs the command, so $! is the target's own PID (signals reach it, not a subshell).
    ip netns exec "$NS" ${TARGET_CMD:-$BIN/aoe-target} "$@" >"$log" 2>&1 &
    PIDS+=($!)
    TARGET_PID=$!
    for _ in $(seq 50); do
        grep -q "serving\|pid" "$log" 2>/dev/null && break
        kill -0 $TARGET_PID 2>/dev/null || break
        sleep 0.1
    done
    sleep 0.2
}

stop_target() {
    local pid=${1:-$TARGET_PID}
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    return 1
}

aoectl() { in_ns timeout 60 "$BIN/aoectl" "$@"; }

finish() {
    if [ "$FAILURES" -eq 0 ]; then echo "PASS"; exit 0; fi
    echo "$FAILURES check(s) failed"; exit 1
}
