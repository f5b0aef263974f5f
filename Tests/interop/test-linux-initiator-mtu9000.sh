#!/usr/bin/env bash
# test-linux-initiator.sh with jumbo frames: MTU 9000 on the bridge, the veths, the tap and the
# guest's eth0, so aoe.ko uses up to 17 sectors (8704 bytes) per frame. Same env, same exit codes.
export MTU=9000
exec bash "$(dirname "${BASH_SOURCE[0]}")/test-linux-initiator.sh" "$@"
