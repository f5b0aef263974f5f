#!/usr/bin/env bash
# The unit tests once under ThreadSanitizer and once under AddressSanitizer (not part of Tests/run.sh: each
# needs its own build, a few minutes on two cores). Separate scratch folders keep the normal build intact.
#   Tests/sanitizers/run.sh [thread|address]...   (default: both)
# Exit 0 when every run passed with no sanitizer report, 1 otherwise.
# Known: ThreadSanitizer reports accesses to state guarded by Swift's Synchronization.Mutex as races (on Linux
# that Mutex waits on a raw futex, which TSan does not see as a lock): MemoryDevice's storage and the tests'
# EventLog. Every report seen so far (7 in one run, 2026-12-01) is of that kind; none is in code guarded by
# ConditionLock (pthread) or atomics.
set -u
cd "$(dirname "$0")/../.."
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(thread address)
failed=0
for kind in "${kinds[@]}"; do
    case $kind in thread|address) ;; *) echo "unknown sanitizer '$kind' (thread, address)" >&2; exit 2 ;; esac
    log=/tmp/aoe-sanitize-$kind.log
    echo "== swift test --sanitize=$kind (log: $log)"
    # halt_on_error: the first report fails the run instead of scrolling past.
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ASAN_OPTIONS="halt_on_error=1 detect_leaks=0" \
        swift test --sanitize="$kind" --scratch-path ".build-$kind" >"$log" 2>&1
    rc=$?
    reports=$(grep -cE "WARNING: ThreadSanitizer|ERROR: AddressSanitizer" "$log")
    summary=$(grep -E "Executed [0-9]+ tests" "$log" | tail -1)
    if [ $rc -eq 0 ] && [ "$reports" = 0 ]; then
        echo "PASS $kind: $summary, no sanitizer report"
    else
        failed=1
        echo "FAIL $kind: exit $rc, $reports report(s); first:"
        grep -m1 -A25 -E "WARNING: ThreadSanitizer|ERROR: AddressSanitizer" "$log" | sed 's/^/    /'
        grep -E "error:|failed" "$log" | head -5 | sed 's/^/    /'
    fi
done
exit $failed
