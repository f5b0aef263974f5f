# Sourced first (before lib.sh) by the tests whose guest reaches the target through virtio-net under TCG.
# There the guest's virtio-net sometimes stops transmitting for good: its kernel logs "NETDEV WATCHDOG ...
# transmit queue 0 timed out" and nothing leaves the guest again (seen: the target had answered every frame it
# got and sat idle in recvmmsg). Such a run says nothing about the target, so the test runs once more; a second
# stall fails as [infra]. The test calls it_check_nic_stall SERIAL-LOG at its verdict.
if [ -z "${IT_ATTEMPT:-}" ]; then
    it_stall=$(mktemp)
    IT_ATTEMPT=1 IT_NIC_STALL_FILE=$it_stall bash "$0" "$@"; it_rc=$?
    if [ "$it_rc" != 0 ] && [ -s "$it_stall" ]; then
        echo "the guest's NIC stalled (NETDEV WATCHDOG in its console), not a target fault: running the test once more"
        : >"$it_stall"
        IT_ATTEMPT=2 IT_NIC_STALL_FILE=$it_stall bash "$0" "$@"; it_rc=$?
    fi
    rm -f "$it_stall"
    exit "$it_rc"
fi

it_check_nic_stall() { # it_check_nic_stall SERIAL-LOG
    grep -q "NETDEV WATCHDOG" "$1" || return 0
    it_fail "[infra] the guest's virtio-net stopped transmitting (NETDEV WATCHDOG): $(tr -d '\r' <"$1" | grep -m1 "NETDEV WATCHDOG")"
    [ -n "${IT_NIC_STALL_FILE:-}" ] && echo stalled >"$IT_NIC_STALL_FILE"
}
