#!/usr/bin/env bash
# deploy/: the systemd unit (and its pass-through drop-in) is clean under systemd-analyze verify, and the
# example config file is accepted by aoe-target --check-config once its paths and NICs exist.
. "$(dirname "$0")/lib.sh"
need_tool systemd-analyze

# verify_unit FILE: systemd-analyze verify prints nothing and exits 0. The unit is checked as shipped,
# except that ExecStart points at the binary built here (verify insists the program exists).
verify_unit() {
    local out
    out=$(cd "$WORK" && systemd-analyze verify "$1" 2>&1)
    [ $? -eq 0 ] && [ -z "$out" ] || { echo "$out" | sed 's/^/    /'; return 1; }
}
export -f verify_unit
export WORK
sed "s|/usr/local/bin/aoe-target|$BIN/aoe-target|g" "$ROOT/deploy/aoe-target.service" >"$WORK/aoe-target.service"
check "deploy/aoe-target.service: systemd-analyze verify is clean" verify_unit "$WORK/aoe-target.service"
for key in ExecReload=/bin/kill StateDirectory=aoe-target AmbientCapabilities=CAP_NET_RAW ProtectSystem=strict ProtectHome=yes \
    PrivateTmp=yes RestrictAddressFamilies=AF_PACKET SystemCallFilter=@system-service; do
    check "unit sets $key" grep -q "^$key" "$WORK/aoe-target.service"
done
# The pass-through drop-in's lines, applied to the unit as systemd would (later lines win), verify too.
{ cat "$WORK/aoe-target.service"; grep -v '^#' "$ROOT/deploy/passthrough.conf"; } >"$WORK/aoe-target-pt.service"
check "deploy/passthrough.conf applied to the unit: verify is clean" verify_unit "$WORK/aoe-target-pt.service"
check "the drop-in adds CAP_SYS_RAWIO" grep -q "^AmbientCapabilities=CAP_NET_RAW CAP_SYS_RAWIO" "$ROOT/deploy/passthrough.conf"
# Negative control: the same check on a unit with a misspelt key must complain.
sed 's/^ProtectHome=yes/ProtectHom=yes/' "$WORK/aoe-target.service" >"$WORK/typo.service"
check "negative control: a misspelt key makes verify complain" bash -c '! verify_unit "$1" >/dev/null' _ "$WORK/typo.service"

# The example config: every key it uses is accepted, with its paths and interfaces made to exist.
net_up
truncate -s 64M "$WORK/disk-a.img" "$WORK/disk-b.img"
sed -e "s|/dev/disk/by-id/ata-EXAMPLE_SERIAL|$WORK/disk-a.img|" -e "s|/srv/aoe/vm-disk.img|$WORK/disk-b.img|" \
    -e 's|"eth1", "eth2"|"t0", "i0"|' -e 's|"eth1"|"t0"|' -e "s|/var/lib/aoe-target|$WORK/state|" \
    "$ROOT/deploy/aoe-target.toml" >"$WORK/example.toml"
out=$(in_ns "$BIN/aoe-target" --check-config "$WORK/example.toml" 2>&1)
check "deploy/aoe-target.toml passes --check-config (2 exports)" grep -q "OK, 2 exports" <<<"$out" || echo "$out"
# With its metrics line switched on, too.
sed -i 's|^# metrics = |metrics = |' "$WORK/example.toml"
out=$(in_ns "$BIN/aoe-target" --check-config "$WORK/example.toml" 2>&1)
check "deploy/aoe-target.toml with metrics on passes --check-config" grep -q "OK, 2 exports" <<<"$out" || echo "$out"
need_tool promtool
check "deploy/prometheus.yml: promtool check config" promtool check config "$ROOT/deploy/prometheus.yml"
sed 's/scrape_interval: 15s/scrape_interval: 15 s/' "$ROOT/deploy/prometheus.yml" >"$WORK/bad-prometheus.yml"
check "negative control: promtool refuses a broken scrape config" bash -c '! promtool check config "$1" >/dev/null 2>&1' _ "$WORK/bad-prometheus.yml"
finish
