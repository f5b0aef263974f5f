#!/usr/bin/env bash
# Proves test-linux-initiator.sh can fail: runs it against a target started with -o SHIFT
# (default 4 sectors: every LBA lands SHIFT sectors further into the image, and the device is
# SHIFT sectors short) and succeeds only if it failed for data reasons, caught both by the guest
# (size / host-seeded sectors) and by the host's look at the image file (placement of the guest's
# writes, ext4, fio --verify_only).
# env: TARGET, MTU, SHIFT (default 4, must be > 0), TIMEOUT, as for test-linux-initiator.sh.
# exit: 0 the inner test failed as it must, 1 it did not, 77 skip.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export SHIFT=${SHIFT:-4}
case "$SHIFT" in ''|0|*[!0-9]*) echo "SHIFT must be a positive number of sectors" >&2; exit 2 ;; esac
export PERF=${PERF:-0}
it_log "negative: test-linux-initiator.sh with SHIFT=$SHIFT must FAIL for a data reason"
it_run_negative "$IT_DIR/test-linux-initiator.sh" \
    '^FAIL: \[data\] guest (size|seed-)' \
    '^FAIL: \[data\] host (write-|ext4|fio)'
