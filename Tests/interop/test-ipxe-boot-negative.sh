#!/usr/bin/env bash
# Proves test-ipxe-boot.sh can fail: runs it against a target started with -o SHIFT (default 4)
# and succeeds only if iPXE read from the target (ATA READs seen on the wire) and still never
# printed the boot marker, i.e. the inner test failed for a data reason.
# env: TARGET, MTU, SHIFT (default 4, must be > 0), TIMEOUT, as for test-ipxe-boot.sh.
# exit: 0 the inner test failed as it must, 1 it did not, 77 skip.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export SHIFT=${SHIFT:-4}
case "$SHIFT" in ''|0|*[!0-9]*) echo "SHIFT must be a positive number of sectors" >&2; exit 2 ;; esac
need_tool tcpdump
it_log "negative: test-ipxe-boot.sh with SHIFT=$SHIFT must FAIL for a data reason"
it_run_negative "$IT_DIR/test-ipxe-boot.sh" \
    'iPXE sent [1-9][0-9]* ATA READ requests' \
    '^FAIL: \[data\] '
