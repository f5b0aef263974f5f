#!/usr/bin/env bash
# The demo: a private network namespace with a veth pair, a sparse 1 GiB image, aoe-target serving it as
# e1.1 on one end, and aoectl on the other end showing it being served. No real interface is touched.
# Runs until Ctrl-C (or DEMO_SECONDS seconds), then removes everything it made.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates a network namespace): sudo $0"; exit 1; }
# shellcheck source=install-deps.sh
. scripts/install-deps.sh
deps_ensure build demo
swift build -c release --product aoe-target >/dev/null
swift build -c release --product aoectl >/dev/null
BIN=$(swift build -c release --show-bin-path)
NS=aoe-demo-$$
DIR=$(mktemp -d /tmp/aoe-demo.XXXXXX)
TARGET_PID=
cleanup() {
    [ -n "$TARGET_PID" ] && kill -TERM "$TARGET_PID" 2>/dev/null && wait "$TARGET_PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$DIR"
    echo "demo: cleaned up namespace $NS and $DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

ip netns add "$NS"
ip -n "$NS" link add aoe-t type veth peer name aoe-i
ip -n "$NS" link set aoe-t up
ip -n "$NS" link set aoe-i up
truncate -s 1G "$DIR/demo.img"
echo "demo: serving $DIR/demo.img (sparse, 1 GiB) as e1.1 on aoe-t in namespace $NS"
ip netns exec "$NS" "$BIN/aoe-target" 1 1 aoe-t "$DIR/demo.img" &
TARGET_PID=$!
sleep 1
ctl() { echo "\$ aoectl $*"; ip netns exec "$NS" "$BIN/aoectl" "$@"; echo; }
ctl discover -i aoe-i
ctl identify -i aoe-i 1.1
echo "hello from aoectl" | dd bs=512 conv=sync status=none | ip netns exec "$NS" "$BIN/aoectl" write -i aoe-i 1.1 --lba 2048
echo "\$ aoectl read -i aoe-i 1.1 --lba 2048 --count 1 | head -c 18"
ip netns exec "$NS" "$BIN/aoectl" read -i aoe-i 1.1 --lba 2048 --count 1 | head -c 18; echo; echo
ctl bench -i aoe-i 1.1 --rw randrw --qd 16 --duration 3 --verify
echo "demo: aoe-target is serving; try: sudo ip netns exec $NS $BIN/aoectl identify -i aoe-i 1.1"
echo "demo: Ctrl-C to stop."
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait "$TARGET_PID"; fi
