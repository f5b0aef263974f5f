#!/bin/sh
# Runs inside the QEMU guest (busybox sh), started by /init; settings in /test/config (written by
# test-sgio-passthrough.sh). Prints marked lines for the host:
#   <TAG> STEP <name> PASS|FAIL <details>     one verdict per check
#   <TAG> FENCE <n> <name>                    sent just before CHECK POWER MODE number n; the host splits
#                                             the drive-side trace at every 0xE5 and names window n <name>
#   <TAG> INFO <text>
# PT_MODE=aoe:       aoe-target ... /dev/sda --passthrough on v0, aoectl on the veth peer.
# PT_MODE=reference: the same sequence with sg_raw / sg_sat_identify / hdparm / smartctl on /dev/sda, then
#                    vblade + aoe.ko across the veth pair (harness check without our binaries).
. /test/config
T=$PT_TAG
FAILS=0
FENCES=0
POWER_BAD=0
OUT=/tmp/out
TGT=$PT_SHELF.$PT_SLOT
TPID=""

say()  { echo "$T $*"; }
pass() { say "STEP $1 PASS $2"; }
fail() { say "STEP $1 FAIL $2"; FAILS=$((FAILS + 1)); show_out; }
info() { say "INFO $*"; }
# the last command's output, unmarked, into the serial log (kept by the host on failure)
show_out() { for f in $OUT $OUT.err; do [ -s $f ] && head -c 3000 $f | sed 's/^/    | /'; done; true; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# ---------------------------------------------------------------- aoe mode: aoectl

# ata ARGS...: aoectl ata ... --json; sets RC, A_STATUS A_ERROR A_COUNT (decimal)
ata() {
    local t0
    t0=$(uptime_s)
    aoectl ata -i "$CIF" "$TGT" --timeout 10 "$@" --json >$OUT 2>$OUT.err
    RC=$?
    A_TIME=$(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }')
    # one jq run per reply (each start of jq costs a good fraction of a second under TCG)
    jq -r '.status, .error, .count, (.data // "") | if . == null then "" else tostring end' $OUT >$OUT.f 2>/dev/null
    { read -r A_STATUS; read -r A_ERROR; read -r A_COUNT; read -r A_DATA; } <$OUT.f
}
ctl() { aoectl "$@" >$OUT 2>$OUT.err; RC=$?; }
regs() { echo "exit $RC status=$(hx "$A_STATUS") error=$(hx "$A_ERROR") count=$(hx "$A_COUNT")"; }
hx() { [ -n "$1" ] && printf '0x%02x' "$1" || echo '?'; }

# ---------------------------------------------------------------- reference mode: sg_raw

# sgraw ARGS...: sg_raw -v ARGS; sets RC, A_STATUS A_ERROR A_COUNT from the sense data (ATA Status Return
# descriptor; or fixed format, libata's pre-2024 layout (error 8, status 9, count 11) or the SAT layout
# (error 3, status 4, count 6)). A GOOD status without sense means success: status 0x50, error 0.
sgraw() {
    sg_raw -v "$@" >$OUT 2>$OUT.err
    RC=$?
    set -- $(cat $OUT $OUT.err | awk '
        function h(s) { s = tolower(s); return (index("0123456789abcdef", substr(s, 1, 1)) - 1) * 16 + index("0123456789abcdef", substr(s, 2, 1)) - 1 }
        /Raw sense data/ { f = 1; next }
        f && NF == 0 { f = 0 }
        f { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9a-fA-F][0-9a-fA-F]$/) b[n++] = h($i) }
        /SCSI Status: Good/ { good = 1 }
        END {
            if (n == 0) { if (good) print 80, 0, 0; exit }
            rc = b[0] % 128
            if (rc == 114 || rc == 115) {                   # 0x72/0x73 descriptor format
                for (i = 8; i + 13 < n; i += 2 + b[i + 1]) if (b[i] == 9) { print b[i + 13], b[i + 3], b[i + 5]; exit }
            } else if (rc == 112 || rc == 113) {            # 0x70/0x71 fixed format
                if (b[3] == 0 && b[4] == 0) print b[9], b[8], b[11]; else print b[4], b[3], b[6]
            }
        }')
    A_STATUS=${1:-} A_ERROR=${2:-} A_COUNT=${3:-}
}
DEV=/dev/sda
# ATA PASS-THROUGH(16) CDBs (LBA bytes 8/10/12 = LBA 7:0 / 15:8 / 23:16; 7/9/11 the upper bytes)
# lba_bytes LBA: "b7 b8 b9 b10 b11 b12" for a 48-bit LBA < 2^32
lba_bytes() {
    printf '%02x %02x 00 %02x 00 %02x' $((($1 >> 24) & 255)) $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255))
}

# ---------------------------------------------------------------- common

fence() {
    FENCES=$((FENCES + 1))
    say "FENCE $FENCES $1 t=$(uptime_s)"
    if [ "$PT_MODE" = aoe ]; then
        ata --command 0xE5
    else
        sgraw $DEV 85 06 20 00 00 00 00 00 00 00 00 00 00 00 e5 00
    fi
    if [ -n "$A_COUNT" ] && [ "$A_COUNT" = 255 ] && [ $((A_STATUS & 0x21)) = 0 ] && [ $((A_STATUS & 0x40)) != 0 ]; then
        [ "$FENCES" = 1 ] && info "CHECK POWER MODE: $(regs) (0xFF = active/idle)"
    else
        POWER_BAD=$((POWER_BAD + 1))
        say "STEP check-power-$FENCES FAIL CHECK POWER MODE before $1: $(regs), want count 0xff, DRDY, no ERR/DF"
        FAILS=$((FAILS + 1)); show_out
    fi
}

# same_as_drive STEP SG_RAW_ARGS...: (aoe mode) the registers of the last AoE reply must be the drive's
# own: sends the same command straight to the drive with sg_raw and compares status and error. A target
# that replies a made-up ABRT (e.g. because it cannot parse the sense data) fails here.
same_as_drive() {
    [ "$PT_MODE" = aoe ] || return 0
    local step=$1 a_s=$A_STATUS a_e=$A_ERROR a_c=$A_COUNT a_rc=$RC aoe_regs
    aoe_regs=$(regs)
    shift
    fence "$step-direct"     # its own trace window: the AoE step's window holds only what came through AoE
    sgraw "$@"
    if [ -n "$A_STATUS" ] && [ "$A_STATUS" = "$a_s" ] && [ "$A_ERROR" = "$a_e" ]; then
        pass "$step" "AoE reply status/error = the drive's own (sg_raw on /dev/sda: $(regs))"
    else
        fail "$step" "AoE reply $aoe_regs, but the drive itself answers $(regs) (sg_raw on /dev/sda): not the drive's registers"
    fi
    A_STATUS=$a_s A_ERROR=$a_e A_COUNT=$a_c RC=$a_rc
}

sum512() { od -An -tu1 -v "$1" | awk '{ for (i = 1; i <= NF; i++) s += $i } END { print s % 256 }'; }
# field FILE WORD NWORDS: an IDENTIFY string (byte-swapped words), blanks removed
field() { dd if="$1" bs=2 skip="$2" count="$3" conv=swab 2>/dev/null | tr -d ' \000'; }

say "INFO guest up at $(uptime_s) s, mode $PT_MODE, bus $PT_BUS"

# ---------------------------------------------------------------- the disk
i=0
while [ ! -e /sys/block/sda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
want_drv=ahci; [ "$PT_BUS" = piix ] && want_drv=ata_piix
drv=$(cat /sys/class/scsi_host/host*/proc_name 2>/dev/null | sort -u | tr '\n' ' ')
model=$(cat /sys/block/sda/device/model 2>/dev/null | tr -d ' ')
size=$(cat /sys/block/sda/size 2>/dev/null)
if [ -b /dev/sda ] && [ "$drv" = "$want_drv " ] && [ "$model" = "$PT_MODEL" ] && [ "$size" = "$PT_SECTORS" ]; then
    pass disk "/dev/sda: $model, $size sectors, host driver $drv"
else
    fail disk "/dev/sda missing or wrong: model '$model' size '$size' drivers '$drv' (want $PT_MODEL, $PT_SECTORS, $want_drv)"
    dmesg | tail -30
    exit 1
fi
head -c 512 /dev/zero >/tmp/zero512

# ---------------------------------------------------------------- veth pair
ip link set lo up
ip link add v0 type veth peer name v1 >$OUT 2>&1
# busybox ip ignores the peer name: the peer is whatever else appeared
CIF=$(ls /sys/class/net | grep -v -x -e lo -e v0 | head -1)
ip link set v0 up
[ -n "$CIF" ] && ip link set "$CIF" up
i=0
while [ $i -lt 50 ]; do
    [ "$(cat /sys/class/net/v0/operstate 2>/dev/null)" = up ] && [ "$(cat /sys/class/net/$CIF/operstate 2>/dev/null)" = up ] && break
    sleep 0.1; i=$((i + 1))
done
if [ -n "$CIF" ] && [ "$(cat /sys/class/net/v0/operstate)" = up ] && [ "$(cat /sys/class/net/$CIF/operstate)" = up ]; then
    pass veth "v0 <-> $CIF up"
else
    fail veth "veth pair not up (peer '$CIF')"; ip link; exit 1
fi

# ---------------------------------------------------------------- target
start_target() {
    # PT_LEAK=1 (negative control): a target that lets everything through; the drive ABRTs 0xF4/0x92
    # itself, so only the host's trace can tell
    [ "$PT_LEAK" = 1 ] && set -- "$@" --allow-all-ata
    echo "aoe-target $PT_SHELF $PT_SLOT v0 /dev/sda --passthrough $*" >>/tmp/target.log
    aoe-target "$PT_SHELF" "$PT_SLOT" v0 /dev/sda --passthrough "$@" >>/tmp/target.log 2>&1 &
    TPID=$!
    i=0
    while [ $i -lt 30 ]; do
        kill -0 $TPID 2>/dev/null || break
        aoectl identify -i "$CIF" "$TGT" --timeout 1 --json >$OUT 2>$OUT.err && return 0
        i=$((i + 1))
    done
    return 1
}
stop_target() {
    [ -n "$TPID" ] || return 0
    kill $TPID 2>/dev/null
    i=0; while kill -0 $TPID 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 $TPID 2>/dev/null
    wait $TPID 2>/dev/null
    TPID=""
}
target_log() { sed 's/^/    target| /' /tmp/target.log | tail -40; }

if [ "$PT_MODE" = aoe ]; then
    if start_target; then
        pass target-up "aoe-target $PT_SHELF $PT_SLOT v0 /dev/sda --passthrough answers on $CIF"
    else
        fail target-up "aoe-target --passthrough did not answer IDENTIFY within 30 tries"; target_log; exit 1
    fi
fi

# ---------------------------------------------------------------- IDENTIFY
fence identify
if [ "$PT_MODE" = aoe ]; then
    ctl identify -i "$CIF" "$TGT" --timeout 10 --json
    jq -r '.model, .serial, .sectors, (.raw // "") | tostring' $OUT >$OUT.f 2>/dev/null
    { read -r m; read -r s; read -r n; read -r raw; } <$OUT.f
    echo "$raw" | xxd -r -p >/tmp/id-aoe.bin
else
    sg_sat_identify -r $DEV >/tmp/id-ref.bin 2>$OUT.err; RC=$?
    m=$(field /tmp/id-ref.bin 27 20); s=$(field /tmp/id-ref.bin 10 10)
    n=$(od -An -tu8 -j200 -N8 /tmp/id-ref.bin | tr -d ' ')
    hdparm -I $DEV >$OUT 2>&1
    grep -q "Model Number: *$PT_MODEL *\$" $OUT && grep -q "Serial Number: *$PT_SERIAL *\$" $OUT ||
        fail identify-hdparm "hdparm -I does not show model $PT_MODEL / serial $PT_SERIAL"
fi
if [ "$RC" = 0 ] && [ "$m" = "$PT_MODEL" ] && [ "$s" = "$PT_SERIAL" ] && [ "$n" = "$PT_SECTORS" ]; then
    pass identify "model '$m', serial '$s', $n sectors (the values given to QEMU)"
else
    fail identify "exit $RC, model '$m' serial '$s' sectors '$n'; want '$PT_MODEL' '$PT_SERIAL' $PT_SECTORS"
fi
if [ "$PT_MODE" = aoe ] && [ -s /tmp/id-aoe.bin ]; then
    # informational: the IDENTIFY data through AoE against the drive's own, read here directly
    sg_sat_identify -r $DEV >/tmp/id-ref.bin 2>/dev/null
    d=$(cmp -l /tmp/id-aoe.bin /tmp/id-ref.bin 2>/dev/null | awk '{ print int(($1 - 1) / 2) }' | uniq | tr '\n' ',' | sed 's/,$//')
    info "IDENTIFY through AoE vs sg_sat_identify on /dev/sda: ${d:+words differing: $d}${d:-identical}"
fi

# ---------------------------------------------------------------- SMART
fence smart-status
if [ "$PT_MODE" = aoe ]; then
    ctl smart -i "$CIF" "$TGT" --timeout 10 --json
    jq -r '(.supported | tostring), (.healthy | tostring), (.attributes | length),
           ([.attributes[] | .id] | map(tostring) | join(",")), (del(.attributes) | tojson)' $OUT >$OUT.f 2>/dev/null
    { read -r sup; read -r ok; read -r nattr; read -r ids; read -r rest; } <$OUT.f
    info "aoectl smart: $rest; attribute ids: $ids"
    [ "$RC" = 0 ] && [ "$sup" = true ] && [ "$ok" = true ] &&
        pass smart-status "SMART RETURN STATUS: supported, healthy" ||
        fail smart-status "exit $RC supported=$sup healthy=$ok"
else
    smartctl -H -d sat $DEV >$OUT 2>&1; RC=$?
    grep -q 'self-assessment test result: PASSED' $OUT && pass smart-status "smartctl -H: PASSED" ||
        fail smart-status "smartctl -H exit $RC, no PASSED"
    smartctl -A -d sat $DEV >$OUT 2>&1
    nattr=$(grep -cE '^ *[0-9]+ [A-Za-z_]+ +0x[0-9a-f]{4} ' $OUT)
    ids=$(grep -E '^ *[0-9]+ [A-Za-z_]+ +0x[0-9a-f]{4} ' $OUT | awk '{ print $1 }' | tr '\n' ',' | sed 's/,$//')
fi
# QEMU's drive reports attributes 1,3,4,5,9,12,190
case ",$ids," in
    *,9,*190,*) pass smart-attributes "$nattr attributes ($ids)" ;;
    *) fail smart-attributes "attributes '$ids' ($nattr); want QEMU's set with 9 and 190" ;;
esac

fence smart-data
if [ "$PT_MODE" = aoe ]; then
    rm -f /tmp/smart.bin
    ata --command 0xB0 --feature 0xD0 --lba 0xC24F00 --count 1 --read-sectors 1
    echo "$A_DATA" | xxd -r -p >/tmp/smart.bin
    # informational: the same command straight to the drive, in a trace window of its own
    cp $OUT $OUT.keep; s_rc=$RC
    fence smart-data-direct
    sgraw -r 512 -o /tmp/smart-direct.bin $DEV 85 08 0e 00 d0 00 01 00 00 00 4f 00 c2 00 b0 00
    cmp -s /tmp/smart.bin /tmp/smart-direct.bin && info "SMART READ DATA through AoE = sg_raw on /dev/sda" ||
        info "SMART READ DATA through AoE differs from sg_raw on /dev/sda: $(cmp /tmp/smart.bin /tmp/smart-direct.bin 2>&1 | head -1)"
    mv $OUT.keep $OUT; RC=$s_rc
else
    sgraw -r 512 -o /tmp/smart.bin $DEV 85 08 0e 00 d0 00 01 00 00 00 4f 00 c2 00 b0 00
fi
sz=$(wc -c </tmp/smart.bin 2>/dev/null)
if [ "$RC" = 0 ] && [ "$sz" = 512 ] && [ "$(sum512 /tmp/smart.bin)" = 0 ] && [ "$(od -An -tu1 -N1 /tmp/smart.bin | tr -d ' ')" != 0 ]; then
    pass smart-data "SMART READ DATA: 512 bytes, revision $(od -An -tu2 -N2 /tmp/smart.bin | tr -d ' '), checksum ok, first attribute id $(od -An -tu1 -j2 -N1 /tmp/smart.bin | tr -d ' ')"
else
    fail smart-data "exit $RC, $sz bytes, checksum $(sum512 /tmp/smart.bin 2>/dev/null)"
fi

# ---------------------------------------------------------------- write, read back, flush
N=$PT_NSECT
fence write
if [ "$PT_MODE" = aoe ]; then
    ctl write -i "$CIF" "$TGT" --timeout 10 --lba "$PT_LBA" --input /test/pattern.bin
else
    sgraw -s $((N * 512)) -i /test/pattern.bin $DEV 85 0b 06 00 00 00 $(printf %02x $N) $(lba_bytes $PT_LBA) 40 34 00
fi
[ "$RC" = 0 ] && pass write "$N sectors of the pattern written at LBA $PT_LBA" || fail write "exit $RC"

fence readback
rm -f /tmp/rb.bin
if [ "$PT_MODE" = aoe ]; then
    ctl read -i "$CIF" "$TGT" --timeout 10 --lba "$PT_LBA" --count "$N" --output /tmp/rb.bin
else
    sgraw -r $((N * 512)) -o /tmp/rb.bin $DEV 85 09 0e 00 00 00 $(printf %02x $N) $(lba_bytes $PT_LBA) 40 24 00
fi
[ "$RC" = 0 ] && cmp -s /tmp/rb.bin /test/pattern.bin && pass readback "LBA $PT_LBA..+$N read back equal to the pattern" ||
    fail readback "exit $RC; $(cmp /tmp/rb.bin /test/pattern.bin 2>&1 | head -1)"

fence flush
if [ "$PT_MODE" = aoe ]; then
    ata --command 0xEA --lba48
else
    sgraw $DEV 85 07 20 00 00 00 00 00 00 00 00 00 00 40 ea 00
fi
# (sg_raw exits 21, "recovered error", for every CK_COND command: the registers decide)
if [ -n "$A_STATUS" ] && [ $((A_STATUS & 0x21)) = 0 ] && [ $((A_STATUS & 0x40)) != 0 ] && { [ "$RC" = 0 ] || [ "$PT_MODE" = reference ]; }; then
    pass flush "FLUSH CACHE EXT: $(regs)"
else
    fail flush "FLUSH CACHE EXT: $(regs)"
fi

# ---------------------------------------------------------------- out of range
fence out-of-range
if [ "$PT_MODE" = aoe ]; then
    ata --command 0x24 --lba48 --lba "$PT_SECTORS" --count 1 --read-sectors 1
else
    sgraw -r 512 $DEV 85 09 0e 00 00 00 01 $(lba_bytes $PT_SECTORS) 40 24 00
fi
# QEMU's drive answers an LBA past the end with ERR and error ABRT (0x04), not IDNF
if [ -n "$A_STATUS" ] && [ $((A_STATUS & 0x01)) = 1 ] && [ "$A_ERROR" = 4 ] && { [ "$RC" != 0 ] || [ "$PT_MODE" = reference ]; }; then
    pass out-of-range "READ SECTORS EXT at LBA $PT_SECTORS (one past the end): $(regs) (ABRT, as the drive answers)"
else
    fail out-of-range "READ SECTORS EXT at LBA $PT_SECTORS: $(regs); want ERR with error 0x04 (the drive's)"
fi
same_as_drive out-of-range-regs -r 512 $DEV 85 09 0e 00 00 00 01 $(lba_bytes $PT_SECTORS) 40 24 00

# ---------------------------------------------------------------- refused and allowed commands
refused() { # name opcode feature
    ata --command "$2" --feature "$3" --count 1 --write-file /tmp/zero512
    if [ "$RC" = 2 ] && [ -n "$A_STATUS" ] && [ $((A_STATUS & 0x01)) = 1 ] && [ $((A_ERROR & 0x04)) = 4 ]; then
        pass "$1" "command $2 answered ERR+ABRT: $(regs) (aoectl took $A_TIME s; the host's trace shows whether the drive saw it)"
    else
        fail "$1" "command $2: $(regs); want ERR + ABRT without reaching the drive"
    fi
}
readlog() { # -> RC, A_*
    if [ "$PT_MODE" = aoe ]; then
        ata --command 0x2F --lba48 --lba 0 --count 1 --read-sectors 1
    else
        sgraw -r 512 $DEV 85 09 0e 00 00 00 01 00 00 00 00 00 00 40 2f 00
    fi
}
fence refused
if [ "$PT_MODE" = reference ] && [ "$PT_LEAK" = 1 ]; then
    # negative control of the host's trace check: send them straight to the drive
    sgraw -s 512 -i /tmp/zero512 $DEV 85 0a 06 00 00 00 01 00 00 00 00 00 00 40 f4 00
    info "PT_LEAK=1: SECURITY ERASE UNIT sent straight to the drive: $(regs)"
    sgraw -s 512 -i /tmp/zero512 $DEV 85 0a 06 00 07 00 01 00 00 00 00 00 00 40 92 00
    info "PT_LEAK=1: DOWNLOAD MICROCODE sent straight to the drive: $(regs)"
fi
if [ "$PT_MODE" = aoe ]; then
    refused refused-f4 0xF4 0
    refused refused-92 0x92 7
    fence readlog-default
    readlog
    info "READ LOG EXT without --allow-ata: $(regs)"
    fence restart
    stop_target
    if start_target --allow-ata 0x2F; then
        pass target-allow-up "aoe-target --passthrough --allow-ata 0x2F answers"
    else
        fail target-allow-up "aoe-target --passthrough --allow-ata 0x2F did not answer"; target_log
    fi
fi
fence readlog-allowed
readlog
# QEMU's drive does not implement READ LOG EXT: its own answer is ERR + ABRT
if [ -n "$A_STATUS" ] && [ $((A_STATUS & 0x01)) = 1 ] && [ "$A_ERROR" = 4 ] && { [ "$RC" != 0 ] || [ "$PT_MODE" = reference ]; }; then
    pass readlog-allowed "READ LOG EXT (allowed): $(regs) (ABRT, as the drive answers)"
else
    fail readlog-allowed "READ LOG EXT (allowed): $(regs); want ERR + ABRT (0x04)"
fi
same_as_drive readlog-regs -r 512 $DEV 85 09 0e 00 00 00 01 00 00 00 00 00 00 40 2f 00
if [ "$PT_MODE" = aoe ]; then
    fence refused-again
    refused refused-f4-again 0xF4 0
    kill -0 "$TPID" 2>/dev/null && info "aoe-target still running" || fail target-alive "aoe-target died"
fi

# ---------------------------------------------------------------- network path with reference software
if [ "$PT_MODE" = reference ]; then
    fence network
    vblade "$PT_SHELF" "$PT_SLOT" v0 /dev/sda >/tmp/vblade.log 2>&1 &
    VPID=$!
    insmod /lib/modules/aoe.ko aoe_iflist="$CIF" >$OUT 2>&1
    i=0; while [ ! -b /dev/etherd/e$TGT ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    rm -f /tmp/net.bin
    dd if=/dev/etherd/e$TGT of=/tmp/net.bin bs=512 skip="$PT_LBA" count="$N" 2>$OUT.err
    if cmp -s /tmp/net.bin /test/pattern.bin; then
        pass network-vblade-aoe "vblade on v0 + aoe.ko on $CIF: /dev/etherd/e$TGT LBA $PT_LBA holds the pattern"
    else
        fail network-vblade-aoe "vblade + aoe.ko over the veth pair: no pattern at LBA $PT_LBA ($(ls /dev/etherd 2>&1))"
        cat /tmp/vblade.log
    fi
    kill $VPID 2>/dev/null
fi

fence end
if [ "$POWER_BAD" = 0 ]; then
    pass check-power "all $FENCES CHECK POWER MODE commands: count 0xFF (active/idle), status DRDY"
else
    fail check-power "$POWER_BAD of $FENCES CHECK POWER MODE commands wrong"
fi
stop_target
[ "$PT_MODE" = aoe ] && { say "INFO target log:"; tail -20 /tmp/target.log | sed "s/^/$T INFO   target| /"; }
say "INFO guest done at $(uptime_s) s, $FAILS failure(s), $FENCES fences"
[ "$FAILS" = 0 ]
