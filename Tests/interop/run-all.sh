#!/usr/bin/env bash
# Runs the whole interop matrix one test after the other (one QEMU at a time) and closes with
#   interop: N passed, N failed, N skipped
# env: TARGET (as for the tests), ONLY (extended regex on the case names below, e.g. ONLY=ipxe).
# exit: 0 all passed or skipped, 1 any failed.  Full output of each case: /tmp/interop-all-*/NAME.log
set -u
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
logs=$(mktemp -d /tmp/interop-all-XXXXXX)
cases=(
    "linux-mtu1500           MTU=1500 $dir/test-linux-initiator.sh"
    "linux-mtu9000           MTU=9000 $dir/test-linux-initiator.sh"
    "linux-negative-shift4   MTU=1500 SHIFT=4 $dir/test-linux-initiator-negative.sh"
    "ipxe-mtu1500            MTU=1500 $dir/test-ipxe-boot.sh"
    "ipxe-negative-shift4    MTU=1500 SHIFT=4 $dir/test-ipxe-boot-negative.sh"
)
pass=0 fail=0 skip=0
for c in "${cases[@]}"; do
    read -r name cmd <<<"$c"
    [[ $name =~ ${ONLY:-.} ]] || continue
    start=$SECONDS
    printf '%-24s ' "$name"
    env $cmd >"$logs/$name.log" 2>&1
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
