#!/usr/bin/env bash
# libFuzzer over the target's whole frame path (parse, protocol state across inputs, ATA dispatch against a
# memory device) and over the initiator's reply parsers: Sources/aoe-fuzz.
#   Tests/fuzz/run.sh [SECONDS]     per target (default $FUZZ_SECONDS or 300: millions of executions each);
#                                   Tests/run.sh runs 60 s of each
# Builds the fuzzing binary (.build-fuzz, instrumented with -sanitize=fuzzer,address), replays the crash
# fixtures in Tests/fuzz/crashes/ first, then fuzzes each target from its seed corpus (Tests/fuzz/corpus/,
# made by make-seeds.sh from a real capture) and prints executions, coverage and crashes. A crash leaves
# its input in Tests/fuzz/crashes/TARGET/ (add it to git: it is a fixture from then on) and fails the run.
set -u
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-${FUZZ_SECONDS:-300}}
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || { echo "usage: Tests/fuzz/run.sh [SECONDS]" >&2; exit 2; }
echo "== building the fuzzing binary (.build-fuzz)"
swift build --product aoe-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING --scratch-path .build-fuzz 2>&1 | tail -1
FUZZ=.build-fuzz/debug/aoe-fuzz
[ -x "$FUZZ" ] || { echo "FAIL: the fuzzing build did not produce $FUZZ"; echo "0 passed, 1 failed"; exit 1; }
passed=0 failed=0
for target in frames replies; do
    crashes=Tests/fuzz/crashes/$target
    mkdir -p "$crashes"
    # The fixtures first: every input that once crashed must not crash again.
    if [ -n "$(ls -A "$crashes" 2>/dev/null)" ]; then
        if AOE_FUZZ_TARGET=$target "$FUZZ" -runs=0 "$crashes" >/tmp/aoe-fuzz-replay-$target.log 2>&1; then
            echo "ok: $target: $(ls "$crashes" | wc -l) crash fixture(s) replayed, none crashes"
        else
            echo "FAIL: $target: a crash fixture crashes again (log /tmp/aoe-fuzz-replay-$target.log)"; failed=$((failed + 1)); continue
        fi
    fi
    work=$(mktemp -d /tmp/aoe-fuzz-$target.XXXXXX)
    log=/tmp/aoe-fuzz-$target.log
    AOE_FUZZ_TARGET=$target timeout -k 10 $((SECONDS_EACH + 60)) "$FUZZ" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        -artifact_prefix="$crashes/" -rss_limit_mb=2048 "$work" "Tests/fuzz/corpus/$target" >"$log" 2>&1
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
    new=$(ls "$crashes" | grep -cE '^(crash|leak|timeout|oom)-')
    if [ $rc -eq 0 ] && [ "${new:-0}" = 0 ]; then
        echo "ok: $target: ${runs:-?} executions in $SECONDS_EACH s, coverage ${cov:-?} edges, 0 crashes"; passed=$((passed + 1))
    else
        echo "FAIL: $target: exit $rc after ${runs:-?} executions; inputs in $crashes:"; ls "$crashes" | sed 's/^/    /'
        grep -m1 -A12 -E "ERROR: |Fatal error|deadly signal" "$log" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
    rm -rf "$work"
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
