#!/usr/bin/env bash
# The whole test suite: unit tests (swift test), end-to-end tests over veth pairs, and interop tests with
# initiators and targets nobody here wrote. Network tests need root; they create their own namespaces.
# A test script exits 0 (pass), 77 (skip: not root or a tool missing) or anything else (fail).
# With CI=true a skip counts as a failure: CI installs every tool and runs as root, so nothing may skip there.
# AOE_SKIP_INTEROP=1 leaves out the QEMU guests (interop, passthrough, blockdev); they count as skipped.
# It sets the machine up first: as root it installs whatever Debian package of scripts/install-deps.sh is
# missing (and says which); otherwise it stops at once, naming the command to run.
set -u
cd "$(dirname "$0")/.."
passed=0 failed=0 skipped=0
failures=()

[ "$(id -u)" -eq 0 ] || { echo "Tests/run.sh: the tests need root (network namespaces, raw sockets, QEMU guests): sudo $0"; exit 1; }
# shellcheck source=../scripts/install-deps.sh
. scripts/install-deps.sh
deps_ensure build e2e interop passthrough rbd || exit 1
command -v swift >/dev/null || { echo "Tests/run.sh: no swift on PATH: install the Swift toolchain (6.0 or newer)"; exit 1; }

echo "== swift build"
swift build 2>&1 | tail -3
if [ "${PIPESTATUS[0]}" -ne 0 ]; then echo "build failed"; echo "0 passed, 1 failed"; exit 1; fi

echo "== swift test"
if swift test 2>&1 | tee /tmp/aoe-swift-test.log | grep -E "error:|Executed .* tests" | tail -20; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); failures+=("swift test")
fi

# run_script SCRIPT [LABEL]: runs one test script and counts its verdict; LABEL marks a second run of it.
run_script() {
    local script=$1
    local name=${script#Tests/}${2:+ ($2)}
    echo "== $name"
    local start=$SECONDS
    timeout --kill-after=10 "${TEST_TIMEOUT:-900}" bash "$script"
    local rc=$?
    local took=$((SECONDS - start))
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1)); echo "PASS $name (${took}s)"
    elif [ $rc -eq 77 ]; then
        if [ "${CI:-}" = "true" ]; then
            failed=$((failed + 1)); failures+=("$name (skipped under CI)"); echo "FAIL $name: skipped, which CI does not allow"
        else
            skipped=$((skipped + 1)); echo "SKIP $name"
        fi
    else
        failed=$((failed + 1)); failures+=("$name"); echo "FAIL $name (exit $rc, ${took}s)"
    fi
}

for script in Tests/repo/test-*.sh Tests/e2e/test-*.sh; do [ -e "$script" ] && run_script "$script"; done

# The end-to-end suite once more against the release build: what users run, with the optimizer on and the
# debug-only bounds checks off.
echo "== swift build -c release"
if swift build -c release 2>&1 | tail -1; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    RELEASE_BIN=$(swift build -c release --show-bin-path)
    for script in Tests/e2e/test-*.sh; do
        [ -e "$script" ] || continue
        AOE_BIN=$RELEASE_BIN run_script "$script" release
    done
else
    failed=$((failed + 1)); failures+=("swift build -c release")
fi

# 60 s of each fuzz target, after replaying every crash fixture.
FUZZ_SECONDS=60 run_script Tests/fuzz/run.sh

# Ceph RBD exports and failover, each on a one-node cluster of its own (about 12 s to start).
for script in Tests/rbd/test-*.sh; do [ -e "$script" ] && run_script "$script"; done

interop=(Tests/interop/test-*.sh Tests/passthrough/test-*.sh Tests/blockdev/test-*.sh Tests/attach/test-*.sh)
if [ "${AOE_SKIP_INTEROP:-}" != "1" ]; then
    for script in "${interop[@]}"; do [ -e "$script" ] && run_script "$script"; done
else
    # Asked for by name, still counted: a skipped layer shows in the totals.
    for script in "${interop[@]}"; do [ -e "$script" ] && { skipped=$((skipped + 1)); echo "SKIP ${script#Tests/} (AOE_SKIP_INTEROP=1)"; }; done
fi

echo
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
