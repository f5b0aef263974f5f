#!/usr/bin/env bash
# Runs the whole interop matrix one test after the other (one QEMU at a time) and closes with
#   interop: N passed, N failed, N skipped
# env: TARGET (as for the tests), ONLY (extended regex on the case names below, e.g. ONLY=ipxe).
# exit: 0 all passed or skipped, 1 any failed.  Full output of each case: /tmp/interop-all-*/NAME.log
set -u
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
logs=$(mktemp -d /tmp/interop-all-XXXXXX)
cases=(
    # name                  script                            environment
    "linux-mtu1500          test-linux-initiator.sh           MTU=1500"
    "linux-mtu9000          test-linux-initiator-mtu9000.sh   MTU=9000"
    "linux-negative-shift4  test-linux-initiator-negative.sh  MTU=1500 SHIFT=4"
    "ipxe-mtu1500           test-ipxe-boot.sh                 MTU=1500"
    "ipxe-negative-shift4   test-ipxe-boot-negative.sh        MTU=1500 SHIFT=4"
)
pass=0 fail=0 skip=0
for c in "${cases[@]}"; do
    read -r name script envs <<<"$c"
    [[ $name =~ ${ONLY:-.} ]] || continue
    start=$SECONDS
    printf '%-24s ' "$name"
    # shellcheck disable=SC2086
    env $envs "$dir/$script" >"$logs/$name.log" 2>&1
    rc=$?
    t=$((SECONDS - start))
    case $rc in
        0) pass=$((pass + 1)); echo "PASS  (${t}s)" ;;
        77) skip=$((skip + 1)); echo "SKIP  (${t}s) $(grep -m1 '^SKIP:' "$logs/$name.log")" ;;
        *) fail=$((fail + 1)); echo "FAIL  (${t}s) $(grep -m1 '^RESULT:' "$logs/$name.log")"
           grep '^FAIL:' "$logs/$name.log" | head -n 5 | sed 's/^/      /' ;;
    esac
done
echo "logs: $logs"
echo "interop: $pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
