#!/bin/sh
# Sourced by the guest halves of the interop tests (busybox sh, /test/report.sh): their lines for the host.
# Each starts with $TAG: CHECK PASS|FAIL <class> <name>: <detail>; INFO <text>; RESULT PASS|FAIL (last).
# DMESG_LINES (default 10): how much of the kernel log `finish` passes on.
NFAIL=0
say()  { echo "$TAG $*"; }
ok()   { say "CHECK PASS $1 $2: $3"; }
bad()  { say "CHECK FAIL $1 $2: $3"; NFAIL=$((NFAIL + 1)); }
info() { say "INFO $*"; }
finish() {
    dmesg | grep -iE 'aoe|etherd|error' | tail -n "${DMESG_LINES:-10}" | while IFS= read -r l; do info "dmesg: $l"; done
    if [ "$NFAIL" = 0 ]; then say "RESULT PASS failures=0"; else say "RESULT FAIL failures=$NFAIL"; fi
    sync
    exit 0
}
