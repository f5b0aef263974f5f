# shellcheck shell=bash
# The host side of a QEMU guest test or benchmark (Tests/passthrough, Tests/blockdev, Tests/attach): verdict
# lines, and one exit path that stops the QEMU it started (by PID) and keeps or removes the work folder.
# Set before sourcing:
#   GUEST_BULKY  files in $WORK (names or globs) that a kept folder drops unless KEEP=1: the initramfs parts
#   GUEST_KEPT   what a kept folder holds, for its message
# Sourcing sets WORK="" QEMU_PID="" FAILED=0 and the EXIT/INT/TERM/HUP traps. A folder is kept with KEEP=1,
# after a failure, or when the script exits non-zero.
FAILED=0
WORK=""
QEMU_PID=""
log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; FAILED=1; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
die()  { printf 'FAIL: [infra] %s\n' "$*"; echo "RESULT: FAIL"; FAILED=1; exit 1; }

guest_cleanup() {
    local rc=$? f
    trap - EXIT INT TERM HUP
    # only the QEMU this script started, by its PID
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -TERM "$QEMU_PID" 2>/dev/null; sleep 1; kill -KILL "$QEMU_PID" 2>/dev/null
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${KEEP:-0}" = 1 ] || [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
            if [ "${KEEP:-0}" != 1 ]; then
                # shellcheck disable=SC2086  # globs in GUEST_BULKY expand here on purpose
                for f in ${GUEST_BULKY:-}; do rm -rf "$WORK"/$f; done
            fi
            echo "artefacts kept in $WORK (${GUEST_KEPT:-the logs})" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap guest_cleanup EXIT
trap 'echo interrupted >&2; exit 130' INT
trap 'echo terminated >&2; exit 143' TERM HUP
