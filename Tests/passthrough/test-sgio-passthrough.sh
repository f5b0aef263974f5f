#!/usr/bin/env bash
# SG_IO ATA pass-through, end to end, against a real libata stack in a QEMU guest.
#
# For each bus (AHCI, then the legacy PIIX IDE bus) the host boots a Debian kernel under QEMU/TCG with a raw
# disk image as an emulated ATA drive (model AOETESTMODEL, serial AOESERIAL42) and records every ATA
# command the emulated drive executes (`-trace ide_exec_cmd` and friends, to a file on the host). Inside the
# guest, `aoe-target 1 1 v0 /dev/sda --passthrough` serves the drive over AoE on one end of a veth pair and
# `aoectl` on the other end sends ATA commands to it (Tests/passthrough/guest-sgio.sh). The guest checks
# the replies; the host then checks the drive-side trace (what reached the drive, and what never did) and
# the bytes in the image file.
#
# PT_MODE=reference runs the same sequence with the reference tools (sg_raw, sg_sat_identify, hdparm,
# smartctl) directly on /dev/sda instead of aoe-target + aoectl, plus vblade + aoe.ko across the guest's
# veth pair: it proves the harness (kernel, modules, initramfs, veth, trace, image checks) without our code.
#
# Exit: 0 pass, 1 fail, 77 skip ("SKIP: reason": not root, a tool missing).
# Environment:
#   PT_MODE      aoe (default) or reference
#   PT_BUSES     "ahci piix" (default) or one of them
#   AOE_BIN_DIR  folder with aoe-target and aoectl (default: .build-passthrough/swift/release if built there,
#                else .build/debug); AOE_TARGET / AOECTL override each binary
#   TIMEOUT      seconds per QEMU run (default 300)
#   KVER         guest kernel version (default: newest /boot/vmlinuz-* with modules)
#   VERBOSE=1    stream the whole serial console;  KEEP=1  keep /tmp/passthrough-* (kept anyway on failure)
#   PT_LEAK=1    negative control of the trace check: 0xF4 and 0x92 DO reach the drive (aoe mode: the target
#                runs with --allow-all-ata; reference mode: sg_raw sends them). The drive ABRTs both itself, so
#                the guest's checks still pass; the run PASSES only if the host's trace check catches both
#                opcodes on every bus and nothing else fails.
set -u

PT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PT_REPO=$(cd "$PT_DIR/../.." && pwd)
MODE=${PT_MODE:-aoe}
BUSES=${PT_BUSES:-ahci piix}
TIMEOUT=${TIMEOUT:-300}
QEMU=${QEMU:-qemu-system-x86_64}
MODEL=AOETESTMODEL
SERIAL=AOESERIAL42
LBA=1000          # where the guest writes the pattern
NSECT=8           # how many sectors
DISK_MB=64        # image size: 131072 sectors
SHELF=1 SLOT=1

LEAK=${PT_LEAK:-0}  # 1: negative control, see the header
LEAKS=0
GUEST_BULKY="root base.cpio cfg-*"
GUEST_KEPT="serial-*.log, trace-*.log, disk-*.img"
# shellcheck source=../lib/guest-harness.sh
. "$PT_DIR/../lib/guest-harness.sh"

# ---------------------------------------------------------------- prerequisites

case "$MODE" in aoe|reference) ;; *) die "PT_MODE must be aoe or reference, not '$MODE'" ;; esac
for b in $BUSES; do case "$b" in ahci|piix) ;; *) die "PT_BUSES: unknown bus '$b' (ahci, piix)" ;; esac; done
[ "$(id -u)" = 0 ] || skip "must run as root (reads /boot/vmlinuz-*, packs kernel modules)"
# shellcheck source=../lib/need.sh
. "$PT_DIR/../lib/need.sh"
# shellcheck source=../lib/guest-image.sh
. "$PT_DIR/../lib/guest-image.sh"
need_tool "$QEMU" cpio busybox jq ldd flock timeout cmp dd od grep awk truncate sha256sum
ldd "$(command -v busybox)" 2>&1 | grep -qE 'not a dynamic executable|statically linked' ||
    skip "busybox is not statically linked (apt-get install busybox-static)"
# aoe mode: sg_raw / sg_sat_identify ask the drive directly, to compare with what comes through AoE
REF_TOOLS="sg_raw sg_sat_identify"
[ "$MODE" = reference ] && REF_TOOLS+=" hdparm smartctl vblade"
need_tool sg_raw sg_sat_identify
[ "$MODE" = reference ] && need_tool hdparm smartctl vblade

kver=$(guest_kernel_version)
[ -n "$kver" ] || skip "no /boot/vmlinuz-* with /lib/modules/*/modules.dep (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$kver
MODDIR=/lib/modules/$kver
[ -r "$KERNEL" ] && [ -f "$MODDIR/modules.dep" ] || skip "cannot read $KERNEL or $MODDIR/modules.dep"

if [ "$MODE" = aoe ]; then
    if [ -z "${AOE_BIN_DIR:-}" ]; then
        AOE_BIN_DIR=$PT_REPO/.build-passthrough/swift/release
        [ -x "$AOE_BIN_DIR/aoe-target" ] || AOE_BIN_DIR=$PT_REPO/.build/debug
    fi
    AOE_TARGET=${AOE_TARGET:-$AOE_BIN_DIR/aoe-target}
    AOECTL=${AOECTL:-$AOE_BIN_DIR/aoectl}
    for b in "$AOE_TARGET" "$AOECTL"; do
        [ -x "$b" ] || die "$b is not built. Build with:
    cd $PT_REPO && swift build -c release --static-swift-stdlib --scratch-path .build-passthrough/swift
  or set AOE_BIN_DIR; PT_MODE=reference runs the harness without our binaries"
    done
    help=$("$AOE_TARGET" --help 2>&1)
    for o in --passthrough --allow-ata; do
        grep -q -- "$o" <<<"$help" || die "$AOE_TARGET has no $o option (aoe-target --help)"
    done
    log "binaries: $AOE_TARGET, $AOECTL"
fi

WORK=$(mktemp -d /tmp/passthrough-sgio-XXXXXX) || die "mktemp failed"
NONCE=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
TAG="@@AOEPT-$NONCE@@"
log "mode $MODE, buses: $BUSES, kernel $kver, work $WORK"
[ "$LEAK" = 1 ] && log "PT_LEAK=1: negative control, 0xF4 and 0x92 will reach the drive; the trace check must catch them"

# ---------------------------------------------------------------- initramfs

mod_resolve() { guest_mod_resolve "$MODDIR" "$@"; }
copy_with_libs() { guest_copy_with_libs "$@"; }
cpio_dir() { guest_cpio_dir "$@"; }

build_initramfs() {
    local root=$WORK/root a m bus mods extra=""
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,lib/modules,test}
    cp "$(command -v busybox)" "$root/bin/busybox"
    for a in $(busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
    [ "$MODE" = reference ] && extra=aoe
    for bus in ahci piix; do
        case $bus in ahci) mods="libahci ahci" ;; piix) mods="ata_piix" ;; esac
        mod_resolve scsi_common scsi_mod libata $mods sd_mod sg veth $extra >"$WORK/mods-$bus" ||
            die "kernel modules missing"
        : >"$root/etc/modules.$bus"
        while read -r m; do
            cp -n "$MODDIR/$m" "$root/lib/modules/"
            basename "$m" >>"$root/etc/modules.$bus"
        done <"$WORK/mods-$bus"
    done
    copy_with_libs "$(command -v jq)" /usr/bin/jq "$root"
    for a in $REF_TOOLS; do
        copy_with_libs "$(command -v $a)" "/usr/bin/$a" "$root"
    done
    if [ "$MODE" = aoe ]; then
        copy_with_libs "$AOE_TARGET" /usr/bin/aoe-target "$root"
        copy_with_libs "$AOECTL" /usr/bin/aoectl "$root"
        # smaller initramfs, faster boot (the copies only)
        command -v strip >/dev/null && strip -s "$root/usr/bin/aoe-target" "$root/usr/bin/aoectl" 2>/dev/null
    fi
    cp "$PT_DIR/guest-sgio.sh" "$root/test/guest-sgio.sh"
    cp "$WORK/pattern.bin" "$root/test/pattern.bin"
    cat >"$root/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
. /test/config
for m in $(cat /etc/modules.$PT_BUS); do
    insmod /lib/modules/$m || echo "$PT_TAG STEP insmod FAIL $m"
done
sh /test/guest-sgio.sh
echo "$PT_TAG EXIT $?"
# Leave through isa-debug-exit (port 0xf4, value 0x2a: QEMU exits 85) rather than poweroff: the kernel's
# shutdown path would send its own FLUSH CACHE / STANDBY to the drive, and the trace must hold only
# what the test sent. poweroff -f is the fallback.
printf '\052' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
sleep 2
poweroff -f
EOF
    chmod 755 "$root/init"
    cpio_dir "$root" "$WORK/base.cpio"
    log "initramfs: $(du -m "$WORK/base.cpio" | cut -f1) MiB, modules: $(tr '\n' ' ' <"$root/etc/modules.ahci")"
}

# ---------------------------------------------------------------- disk image and pattern

# sector TEXT: 512 bytes, TEXT then random bytes
sector() { guest_sector "$1"; }

make_pattern() {
    local i
    for ((i = 0; i < NSECT; i++)); do sector "AOEPT-$NONCE-LBA-$((LBA + i))-"; done >"$WORK/pattern.bin"
    sector "GUARD-$NONCE-$((LBA - 1))-" >"$WORK/guard-before.bin"
    sector "GUARD-$NONCE-$((LBA + NSECT))-" >"$WORK/guard-after.bin"
    for ((i = 0; i < NSECT; i++)); do sector "OLD-$NONCE-$((LBA + i))-"; done >"$WORK/old.bin"
}

make_image() {
    local img=$1
    rm -f "$img"
    truncate -s "${DISK_MB}M" "$img"
    dd if="$WORK/guard-before.bin" of="$img" bs=512 seek=$((LBA - 1)) conv=notrunc status=none
    dd if="$WORK/old.bin" of="$img" bs=512 seek=$LBA conv=notrunc status=none
    dd if="$WORK/guard-after.bin" of="$img" bs=512 seek=$((LBA + NSECT)) conv=notrunc status=none
}

# ---------------------------------------------------------------- QEMU

qemu_lock() { guest_qemu_lock || die "QEMU lock: see the line above"; }

run_guest() {
    local bus=$1 img=$2 serial=$3 trace=$4 initrd=$5 rc dev
    case $bus in
        ahci) dev=(-device ahci,id=ahci -device "ide-hd,drive=d0,bus=ahci.0,model=$MODEL,serial=$SERIAL") ;;
        piix) dev=(-device "ide-hd,drive=d0,bus=ide.0,model=$MODEL,serial=$SERIAL") ;;
    esac
    printf '%s\n' ide_exec_cmd ide_sector_read ide_sector_write ide_dma_cb process_ncq_command >"$WORK/trace-events"
    qemu_lock
    : >"$serial"
    : >"$trace"
    timeout -k 5 "$TIMEOUT" "$QEMU" -accel tcg -machine pc -m 512 -smp 1 \
        -nodefaults -no-user-config -display none -monitor none -no-reboot \
        -serial "file:$serial" \
        -kernel "$KERNEL" -initrd "$initrd" -append "console=ttyS0 panic=-1 quiet loglevel=3" \
        -drive "if=none,id=d0,file=$img,format=raw" "${dev[@]}" \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -trace "events=$WORK/trace-events,file=$trace" \
        >"$serial.qemu-out" 2>&1 </dev/null &
    QEMU_PID=$!
    guest_wait_qemu "$QEMU_PID" "$serial" "$TAG"
    rc=$?
    QEMU_PID=""
    return $rc
}

# ---------------------------------------------------------------- checks on the host

# Steps the guest must report as PASS.
if [ "$MODE" = aoe ]; then
    REQUIRED_STEPS="disk veth target-up identify smart-status smart-attributes smart-data write readback flush
                    out-of-range out-of-range-regs refused-f4 refused-92 target-allow-up readlog-allowed readlog-regs
                    refused-f4-again check-power"
else
    REQUIRED_STEPS="disk veth identify smart-status smart-attributes smart-data write readback flush
                    out-of-range readlog-allowed check-power network-vblade-aoe"
fi

check_guest() {
    local bus=$1 serial=$2 s line
    tr -d '\r' <"$serial" | grep -F "$TAG" | sed "s/^.*$TAG //" >"$WORK/markers-$bus"
    grep -q '^EXIT 0$' "$WORK/markers-$bus" || fail "[$bus] guest script did not finish with EXIT 0 ($(grep '^EXIT' "$WORK/markers-$bus" || echo 'no EXIT line'))"
    while read -r line; do fail "[$bus] guest: $line"; done < <(grep -E '^STEP [^ ]+ FAIL' "$WORK/markers-$bus")
    for s in $REQUIRED_STEPS; do
        grep -qE "^STEP $s PASS" "$WORK/markers-$bus" || fail "[$bus] guest step '$s' did not pass"
    done
}

# The trace as "N OPCODE" lines plus data-transfer lines; split into windows by the guest's fences.
# Every fence is a CHECK POWER MODE (0xE5), which the guest kernel never sends by itself, so the k-th
# 0xE5 in the trace is the guest's k-th fence, and the commands between two fences belong to the step
# the guest named after the first of them.
check_trace() {
    local bus=$1 trace=$2 nfence ne5 have
    awk '
        /ide_exec_cmd/ { if (match($0, /cmd 0x[0-9a-fA-F]+/)) { c = tolower(substr($0, RSTART + 6, RLENGTH - 6)); if (length(c) == 1) c = "0" c; print "CMD " c } next }
        /process_ncq_command / { if (match($0, /NCQ op 0x[0-9a-fA-F]+/)) { c = tolower(substr($0, RSTART + 9, RLENGTH - 9)); sub(/^.*NCQ op 0x[0-9a-fA-F]+ */, ""); print "NCQ " c " " $0 } next }
        /^(ide_sector_write|ide_sector_read|ide_dma_cb) / { print "XFER " $0 }
    ' "$trace" >"$WORK/trace-$bus.cmds"
    if ! grep -q '^CMD ' "$WORK/trace-$bus.cmds"; then
        fail "[$bus] trace: no ide_exec_cmd line at all in $trace (tracing broken?)"
        return
    fi
    log "[$bus] trace: $(grep -c '^CMD ' "$WORK/trace-$bus.cmds") ATA commands, $(grep -c '^NCQ ' "$WORK/trace-$bus.cmds") NCQ commands"
    nfence=$(grep -c '^FENCE ' "$WORK/markers-$bus")
    ne5=$(grep -c '^CMD e5$' "$WORK/trace-$bus.cmds")
    if [ "$nfence" -lt 5 ] || [ "$nfence" != "$ne5" ]; then
        fail "[$bus] trace: the guest sent $nfence fences (CHECK POWER MODE) but the drive executed $ne5"
        return
    fi
    pass "[$bus] trace: all $nfence CHECK POWER MODE fences reached the drive"
    # window files: win-<bus>-<k>.<step>
    rm -f "$WORK"/win-"$bus"-*
    awk -v dir="$WORK" -v bus="$bus" -v markers="$WORK/markers-$bus" '
        BEGIN { while ((getline l < markers) > 0) { split(l, f, " "); if (f[1] == "FENCE") name[f[2]] = f[3] }
                k = 0; out = dir "/win-" bus "-0.boot" }
        $0 == "CMD e5" { k++; out = dir "/win-" bus "-" k "." name[k]; printf "" > out; next }
        { print >> out }
    ' "$WORK/trace-$bus.cmds"
    win() { cat "$WORK"/win-"$bus"-*."$1" 2>/dev/null; }
    has_cmd() { grep -qE "^CMD ($2)\$" <<<"$1"; }

    have=$(win boot)
    has_cmd "$have" ec && pass "[$bus] trace: the kernel's own IDENTIFY (0xEC) at boot is in the trace (trace runs from boot)" ||
        fail "[$bus] trace: no IDENTIFY (0xEC) before the first fence: the trace does not cover the boot"
    for s in smart-status smart-data; do
        have=$(win $s)
        has_cmd "$have" b0 && pass "[$bus] trace: SMART (0xB0) reached the drive during $s" ||
            fail "[$bus] trace: no SMART (0xB0) at the drive during $s"
    done
    # the write must reach the drive at LBA $LBA before the drive's first FLUSH after it
    have=$( { win write; win readback; win flush | awk '/^CMD (ea|e7)$/ { exit } { print }'; } )
    if grep -qE "^(CMD (30|31|34|35|39|3d|ca|cb|c5)|NCQ 61)" <<<"$have"; then
        pass "[$bus] trace: a write command reached the drive before the FLUSH ($(grep -E '^(CMD|NCQ)' <<<"$have" | sort | uniq -c | awk '{ printf "%s%s x%s", (NR > 1 ? ", " : ""), ($2 == "NCQ" ? "NCQ " $3 : $3), $1 }'))"
    else
        fail "[$bus] trace: no write command at the drive between the write step and the FLUSH"
    fi
    if grep -qE "(sector_num=|sector=|sectors \[)${LBA}[^0-9]" <<<"$have"; then
        pass "[$bus] trace: the drive transferred data at LBA $LBA: $(grep -E "(sector_num=|sector=|sectors \[)${LBA}[^0-9]" <<<"$have" | head -1 | cut -c1-120)"
    else
        fail "[$bus] trace: no data transfer at LBA $LBA (ide_sector_write / ide_dma_cb / NCQ) before the FLUSH"
    fi
    have=$(win flush)
    has_cmd "$have" 'ea|e7' && pass "[$bus] trace: FLUSH CACHE (EXT) reached the drive after the write" ||
        fail "[$bus] trace: no FLUSH CACHE (0xEA/0xE7) at the drive during the flush step"
    have=$(win out-of-range)
    if grep -qE '^(CMD (20|21|24|25|29|c4|c8|c9)|NCQ 60)' <<<"$have"; then
        pass "[$bus] trace: the out-of-range read reached the drive"
    else
        fail "[$bus] trace: no read command at the drive during the out-of-range step (error not from the drive?)"
    fi
    have=$(win readlog-allowed)
    has_cmd "$have" 2f && pass "[$bus] trace: READ LOG EXT (0x2F) reached the drive when allowed (positive control)" ||
        fail "[$bus] trace: READ LOG EXT (0x2F) did not reach the drive in the readlog-allowed step"
    if [ -n "$(ls "$WORK"/win-"$bus"-*.readlog-default 2>/dev/null)" ]; then
        have=$(win readlog-default)
        has_cmd "$have" 2f && log "[$bus] info: READ LOG EXT reached the drive WITHOUT --allow-ata (default policy lets it through)" ||
            log "[$bus] info: READ LOG EXT without --allow-ata did not reach the drive (refused by default)"
    fi
    # refused commands: never at the drive, anywhere in the trace
    local op n
    for op in f4 92; do
        n=$(grep -c "^CMD $op\$" "$WORK/trace-$bus.cmds")
        if [ "$n" = 0 ]; then
            pass "[$bus] trace: 0x${op^^} never reached the drive (while 0x2F, 0xB0, 0xE5 in the same trace did)"
        else
            printf 'FAIL: %s\n' "[$bus] trace: 0x${op^^} (refused) reached the drive $n time(s)"
            LEAKS=$((LEAKS + 1))
            [ "$LEAK" = 1 ] || FAILED=1
        fi
    done
    # condensed sequence for the report
    awk '/^CMD/ { printf "%s ", $2 } /^NCQ/ { printf "ncq%s ", $2 } END { print "" }' "$WORK/trace-$bus.cmds" |
        fold -w 150 | sed "s/^/  [$bus] drive saw: /" | head -12
}

check_image() {
    local bus=$1 img=$2 offs want
    if dd if="$img" bs=512 skip=$LBA count=$NSECT status=none | cmp -s - "$WORK/pattern.bin"; then
        pass "[$bus] image: LBA $LBA..$((LBA + NSECT - 1)) hold the pattern written through $([ "$MODE" = aoe ] && echo AoE || echo SG_IO)"
    else
        fail "[$bus] image: LBA $LBA..$((LBA + NSECT - 1)) do not hold the pattern ($(dd if="$img" bs=512 skip=$LBA count=1 status=none | head -c 40 | tr -c '[:print:]' .))"
    fi
    dd if="$img" bs=512 skip=$((LBA - 1)) count=1 status=none | cmp -s - "$WORK/guard-before.bin" &&
        dd if="$img" bs=512 skip=$((LBA + NSECT)) count=1 status=none | cmp -s - "$WORK/guard-after.bin" &&
        pass "[$bus] image: guard sectors $((LBA - 1)) and $((LBA + NSECT)) untouched" ||
        fail "[$bus] image: a guard sector next to the write changed"
    offs=$(grep -obaF "AOEPT-$NONCE-LBA-" "$img" | cut -d: -f1 | tr '\n' ' ')
    want=$(for ((i = 0; i < NSECT; i++)); do printf '%d ' $(((LBA + i) * 512)); done)
    [ "$offs" = "$want" ] && pass "[$bus] image: the pattern is nowhere else in the image" ||
        fail "[$bus] image: pattern found at byte offsets '$offs', expected '$want'"
}

# ---------------------------------------------------------------- main

make_pattern
build_initramfs
SECTORS=$((DISK_MB * 2048))
for bus in $BUSES; do
    start=$SECONDS
    img=$WORK/disk-$bus.img serial=$WORK/serial-$bus.log trace=$WORK/trace-$bus.log
    make_image "$img"
    root_cfg=$WORK/cfg-$bus
    mkdir -p "$root_cfg/test"
    cat >"$root_cfg/test/config" <<EOF
PT_TAG='$TAG'
PT_MODE=$MODE
PT_BUS=$bus
PT_MODEL=$MODEL
PT_SERIAL=$SERIAL
PT_SECTORS=$SECTORS
PT_LBA=$LBA
PT_NSECT=$NSECT
PT_SHELF=$SHELF
PT_SLOT=$SLOT
PT_LEAK=$LEAK
EOF
    cpio_dir "$root_cfg" "$WORK/cfg-$bus.cpio"
    cat "$WORK/base.cpio" "$WORK/cfg-$bus.cpio" >"$WORK/initrd-$bus"
    log "[$bus] booting guest ($MODE mode)"
    run_guest "$bus" "$img" "$serial" "$trace" "$WORK/initrd-$bus"
    rc=$?
    rm -f "$WORK/initrd-$bus"
    log "[$bus] QEMU exited with $rc after $((SECONDS - start)) s"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        fail "[$bus] [infra] QEMU timed out after $TIMEOUT s"
        tr -d '\r' <"$serial" | tail -20 | sed 's/^/  serial| /'
    elif [ "$rc" != 85 ]; then
        fail "[$bus] [infra] QEMU exit status $rc, expected 85 (guest leaves through isa-debug-exit)"
    fi
    check_guest "$bus" "$serial"
    check_trace "$bus" "$trace"
    check_image "$bus" "$img"
    log "[$bus] done in $((SECONDS - start)) s"
done

if [ "$LEAK" = 1 ]; then
    nb=$(wc -w <<<"$BUSES")
    if [ "$FAILED" = 0 ] && [ "$LEAKS" = $((2 * nb)) ]; then
        echo "RESULT: PASS (negative control: the trace caught 0xF4 and 0x92 at the drive on every bus, $MODE mode)"
        exit 0
    fi
    echo "RESULT: FAIL (negative control: $LEAKS of $((2 * nb)) leaks caught; other failures: $FAILED)"
    exit 1
fi
if [ "$FAILED" = 0 ]; then
    echo "RESULT: PASS ($MODE mode, buses: $BUSES)"
    exit 0
fi
echo "RESULT: FAIL ($MODE mode)"
exit 1
