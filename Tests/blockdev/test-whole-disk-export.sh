#!/usr/bin/env bash
# A whole block device (/dev/sda) exported by aoe-target is served like a disk: queued through io_uring with
# many requests in flight at the drive, never as "memory-backed" one at a time on the receive thread (the
# bug: the node lives on devtmpfs, whose magic is TMPFS_MAGIC).
#
# The host boots a Debian kernel under QEMU/TCG with a raw ext4-formatted image as an emulated AHCI drive and
# records every ATA command the drive executes (-trace: ide_exec_cmd, process_ncq_command, ncq_finish, to a
# file on the host). Inside the guest (Tests/blockdev/guest-whole-disk.sh, busybox sh, network only on the
# guest's own veth pair):
#   1. /dev/sda mounted: aoe-target 1 1 v0 /dev/sda is refused ("device busy", O_EXCL); umount.
#   2. For each of (none), --direct, --sync, --direct --sync: aoe-target 1 1 v0 /dev/sda MODE logs
#      "block device /dev/sda" and "I/O via io_uring"; (first mode) a second export 1.2 of the disk is
#      refused as busy; aoectl bench randrw 4k QD32 --verify passes while a busybox loop samples
#      /sys/block/sda/inflight every ~20 ms: the max of reads+writes must be >= 2. First mode: 8 sectors
#      of a per-run pattern written at LBA 500000 through AoE, then FLUSH CACHE EXT through AoE.
#   3. Negative control, same run: --io-engine threads --workers 1, same bench and sampler: max must be 1.
#   4. TRIM on whole disks: /dev/sda (libata gives it no WRITE ZEROES) offers none and aoectl discard is
#      refused; a second disk, virtio-blk with discard=unmap (/dev/vda, --direct), offers TRIM reading zeros:
#      a 1 MiB pattern at 8 MiB reads as zeros after aoectl discard, and the host finds a hole there in the
#      disk's file, next to an untrimmed copy at 16 MiB that is still data.
# The drive's reads are throttled in QEMU (50 IOPS, a slow disk) so a request stays in flight long enough for
# the 20 ms sampler to see it; the guest keeps the kernel's flusher from writing back on its own during a
# bench (see guest-whole-disk.sh), so what is in flight is the target's doing.
# Fences: before each step the guest sends CHECK POWER MODE (0xE5) straight to the drive with sg_raw on
# /dev/sg0 (the kernel never sends 0xE5 itself), so the host can cut the trace into windows. The host checks
# the guest's verdicts; in the trace: FLUSH (0xEA/0xE7) reached the drive after the pattern's write in the
# flush window, none in an idle window or in the non-durable bench windows, some in both --sync bench
# windows; NCQ commands outstanding at the drive at once >= 2 in the io_uring windows and exactly 1 in the
# negative control's; after QEMU exits, the pattern is in the image file at exactly LBA 500000..500007.
#
# Exit: 0 pass, 1 fail, 77 skip ("SKIP: reason": not root, a tool missing).
# Environment:
#   AOE_BIN_DIR  folder with aoe-target and aoectl (default: .build-passthrough/swift/release if built there,
#                else .build/debug); AOE_TARGET / AOECTL override each binary
#   TIMEOUT      seconds for the QEMU run (default 420)
#   BD_DURATION  seconds of each bench's measured phase (default 6)
#   BD_SEED      aoectl bench --seed (default: random per run, logged)
#   BD_DRIVE_READ_IOPS  QEMU read throttle of the drive (default 50, see DRIVE_READ_IOPS below)
#   KVER         guest kernel version (default: newest /boot/vmlinuz-* with modules)
#   VERBOSE=1    stream the whole serial console;  KEEP=1  keep /tmp/blockdev-* (kept anyway on failure)
#   BD_NEGATIVE=1  wrong-setup run: the four main modes get --io-engine threads --workers 1 (what the bug
#                looked like: one I/O at a time). The run must FAIL on the engine-* and inflight-* checks
#                (guest) and the NCQ concurrency checks (trace); the negative control itself still passes.
set -u

BD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BD_REPO=$(cd "$BD_DIR/../.." && pwd)
TIMEOUT=${TIMEOUT:-420}
QEMU=${QEMU:-qemu-system-x86_64}
DURATION=${BD_DURATION:-6}
NEGATIVE=${BD_NEGATIVE:-0}
MODEL=AOEBLKDEVDISK
SERIAL=AOEBLK0001
DISK_MB=256       # the drive: 524288 sectors
FS_MB=224         # ext4 covers the first 224 MiB only
REGION=491520     # benches touch sectors 0..491519 (240 MiB), clear of the pattern
LBA=500000        # the pattern: 8 sectors, guard sectors on either side
NSECT=8
# The emulated drive answers from the host's page cache in microseconds, so a 20 ms sampler of
# /sys/block/sda/inflight almost never catches a request in flight (measured: max 0 in 300+ samples in every
# mode, while the trace showed 8-13 NCQ commands outstanding at once). QEMU's throttle makes reads a slow
# disk's (DRIVE_READ_IOPS): a request then stays in flight for tens of ms, long enough to be sampled. Writes
# are not throttled, so the fdatasync write-back stays quick.
DRIVE_READ_IOPS=${BD_DRIVE_READ_IOPS:-50}

GUEST_BULKY="root base.cpio cfg initrd"
GUEST_KEPT="serial.log, trace.log, trace.cmds, win-*, markers, disk.img"
# shellcheck source=../lib/guest-harness.sh
. "$BD_DIR/../lib/guest-harness.sh"

# ---------------------------------------------------------------- prerequisites

[ "$(id -u)" = 0 ] || skip "must run as root (reads /boot/vmlinuz-*, packs kernel modules)"
# shellcheck source=../lib/need.sh
. "$BD_DIR/../lib/need.sh"
# shellcheck source=../lib/guest-image.sh
. "$BD_DIR/../lib/guest-image.sh"
need_tool "$QEMU" cpio busybox jq ldd flock timeout cmp dd od grep awk truncate mke2fs sg_raw pgrep python3
ldd "$(command -v busybox)" 2>&1 | grep -qE 'not a dynamic executable|statically linked' ||
    skip "busybox is not statically linked (apt-get install busybox-static)"
case "$DURATION" in ''|*[!0-9]*) die "BD_DURATION must be whole seconds, not '$DURATION'" ;; esac

kver=$(guest_kernel_version)
[ -n "$kver" ] || skip "no /boot/vmlinuz-* with /lib/modules/*/modules.dep (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$kver
MODDIR=/lib/modules/$kver
[ -r "$KERNEL" ] && [ -f "$MODDIR/modules.dep" ] || skip "cannot read $KERNEL or $MODDIR/modules.dep"

if [ -z "${AOE_BIN_DIR:-}" ]; then
    AOE_BIN_DIR=$BD_REPO/.build-passthrough/swift/release
    [ -x "$AOE_BIN_DIR/aoe-target" ] || AOE_BIN_DIR=$BD_REPO/.build/debug
fi
AOE_TARGET=${AOE_TARGET:-$AOE_BIN_DIR/aoe-target}
AOECTL=${AOECTL:-$AOE_BIN_DIR/aoectl}
for b in "$AOE_TARGET" "$AOECTL"; do
    [ -x "$b" ] || die "$b is not built. Build with:
    cd $BD_REPO && swift build
  or: swift build -c release --static-swift-stdlib --scratch-path .build-passthrough/swift
  or set AOE_BIN_DIR"
done
help=$("$AOE_TARGET" --help 2>&1)
for o in --io-engine --workers --direct --sync; do
    grep -q -- "$o" <<<"$help" || die "$AOE_TARGET has no $o option (aoe-target --help)"
done
grep -q -- --seed <<<"$("$AOECTL" bench --help 2>&1)" || die "$AOECTL bench has no --seed option"
log "binaries: $AOE_TARGET, $AOECTL"

WORK=$(mktemp -d /tmp/blockdev-XXXXXX) || die "mktemp failed"
NONCE=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
TAG="@@AOEBD-$NONCE@@"
SEED=${BD_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
log "kernel $kver, bench ${DURATION}s x 5, seed $SEED, drive reads throttled to $DRIVE_READ_IOPS IOPS, work $WORK"
[ "$NEGATIVE" = 1 ] && log "BD_NEGATIVE=1: the main modes run with --io-engine threads --workers 1; this run must FAIL"

# ---------------------------------------------------------------- initramfs


build_initramfs() {
    local root=$WORK/root a m
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,etc,lib/modules,test}
    cp "$(command -v busybox)" "$root/bin/busybox"
    for a in $(busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
    # ext4 asks the crypto API for "crc32c" by name: crc32c_generic (TCG's CPU model has no SSE4.2)
    guest_mod_resolve "$MODDIR" scsi_common scsi_mod libata libahci ahci sd_mod sg veth crc32c_generic ext4 virtio_pci virtio_blk \
        >"$WORK/mods" || die "kernel modules missing"
    : >"$root/etc/modules"
    while read -r m; do
        cp -n "$MODDIR/$m" "$root/lib/modules/"
        basename "$m" >>"$root/etc/modules"
    done <"$WORK/mods"
    guest_copy_with_libs "$(command -v jq)" /usr/bin/jq "$root"
    guest_copy_with_libs "$(command -v sg_raw)" /usr/bin/sg_raw "$root"
    guest_copy_with_libs "$AOE_TARGET" /usr/bin/aoe-target "$root"
    guest_copy_with_libs "$AOECTL" /usr/bin/aoectl "$root"
    # smaller initramfs, faster boot (the copies only)
    command -v strip >/dev/null && strip -s "$root/usr/bin/aoe-target" "$root/usr/bin/aoectl" 2>/dev/null
    cp "$BD_DIR/guest-whole-disk.sh" "$root/test/guest-whole-disk.sh"
    cp "$WORK/pattern.bin" "$root/test/pattern.bin"
    cat >"$root/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
. /test/config
for m in $(cat /etc/modules); do
    insmod /lib/modules/$m || echo "$BD_TAG STEP insmod FAIL $m"
done
sh /test/guest-whole-disk.sh
echo "$BD_TAG EXIT $?"
# Leave through isa-debug-exit (port 0xf4, value 0x2a: QEMU exits 85), not poweroff: the kernel's shutdown
# path would add FLUSH CACHE / STANDBY of its own to the trace. poweroff -f is the fallback.
printf '\052' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
sleep 2
poweroff -f
EOF
    chmod 755 "$root/init"
    guest_cpio_dir "$root" "$WORK/base.cpio"
    log "initramfs: $(du -m "$WORK/base.cpio" | cut -f1) MiB, modules: $(tr '\n' ' ' <"$root/etc/modules")"
}

# ---------------------------------------------------------------- disk image and pattern

# sector TEXT: 512 bytes, TEXT then random bytes
sector() { guest_sector "$1"; }

make_pattern() {
    local i
    for ((i = 0; i < NSECT; i++)); do sector "AOEBD-$NONCE-LBA-$((LBA + i))-"; done >"$WORK/pattern.bin"
    sector "GUARD-$NONCE-$((LBA - 1))-" >"$WORK/guard-before.bin"
    sector "GUARD-$NONCE-$((LBA + NSECT))-" >"$WORK/guard-after.bin"
    for ((i = 0; i < NSECT; i++)); do sector "OLD-$NONCE-$((LBA + i))-"; done >"$WORK/old.bin"
}

make_image() {
    local img=$1
    rm -f "$img"
    truncate -s "${DISK_MB}M" "$img"
    mke2fs -t ext4 -F -q "$img" "${FS_MB}M" || die "mke2fs -t ext4 failed on $img"
    dd if="$WORK/guard-before.bin" of="$img" bs=512 seek=$((LBA - 1)) conv=notrunc status=none
    dd if="$WORK/old.bin" of="$img" bs=512 seek=$LBA conv=notrunc status=none
    dd if="$WORK/guard-after.bin" of="$img" bs=512 seek=$((LBA + NSECT)) conv=notrunc status=none
}

# ---------------------------------------------------------------- QEMU

qemu_lock() { guest_qemu_lock || die "QEMU lock: see the line above"; }

run_guest() {
    local img=$1 serial=$2 trace=$3 initrd=$4 vdimg=$5 rc
    printf '%s\n' ide_exec_cmd process_ncq_command ncq_finish process_ncq_command_fua ide_dma_cb >"$WORK/trace-events"
    qemu_lock
    : >"$serial"
    : >"$trace"
    # -nodefaults: no NIC at all; the only network is the veth pair inside the guest
    timeout -k 5 "$TIMEOUT" "$QEMU" -accel tcg -machine pc -m 768 -smp 1 \
        -nodefaults -no-user-config -display none -monitor none -no-reboot -nic none \
        -serial "file:$serial" \
        -kernel "$KERNEL" -initrd "$initrd" -append "console=ttyS0 panic=-1 quiet loglevel=3" \
        -drive "if=none,id=d0,file=$img,format=raw,throttling.iops-read=$DRIVE_READ_IOPS" \
        -device ahci,id=ahci -device "ide-hd,drive=d0,bus=ahci.0,model=$MODEL,serial=$SERIAL" \
        -drive "if=none,id=d1,file=$vdimg,format=raw,discard=unmap" -device virtio-blk-pci,drive=d1 \
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

MODES="plain direct sync direct-sync"
REQUIRED_STEPS="disk veth mount busy-mounted umount busy-exported first-still-serves write flush fences trim-sda trim-vda"
for m in $MODES negative; do REQUIRED_STEPS+=" engine-$m bench-$m inflight-$m no-kernel-writeback-$m"; done

check_guest() {
    local s line
    tr -d '\r' <"$WORK/serial.log" | grep -F "$TAG" | sed "s/^.*$TAG //" >"$WORK/markers"
    grep -q '^EXIT 0$' "$WORK/markers" || fail "guest script did not finish with EXIT 0 ($(grep '^EXIT' "$WORK/markers" || echo 'no EXIT line'))"
    while read -r line; do fail "guest: $line"; done < <(grep -E '^STEP [^ ]+ FAIL' "$WORK/markers")
    for s in $REQUIRED_STEPS; do
        grep -qE "^STEP $s PASS" "$WORK/markers" || fail "guest step '$s' did not pass"
    done
    grep -E '^STEP (busy-mounted|busy-exported|engine-plain|inflight-.*|bench-plain) PASS' "$WORK/markers" |
        sed 's/^STEP /  /'
}

# The trace as "CMD op", "NCQ op tag first last", "FIN tag" lines, cut into windows at the guest's fences.
# Every fence is a CHECK POWER MODE (0xE5), which the guest kernel never sends by itself, so the k-th 0xE5
# is the guest's k-th fence and the commands up to the next one belong to the window the guest named.
check_trace() {
    local trace=$1 nfence ne5 have m n want
    awk '
        /ide_exec_cmd/ { if (match($0, /cmd 0x[0-9a-fA-F]+/)) { c = tolower(substr($0, RSTART + 6, RLENGTH - 6)); if (length(c) == 1) c = "0" c; print "CMD " c } next }
        /process_ncq_command_fua/ { print "FUA"; next }
        /process_ncq_command / {
            t = ""; op = ""; a = ""; b = ""
            if (match($0, /\[tag:[0-9]+\]/)) t = substr($0, RSTART + 5, RLENGTH - 6)
            if (match($0, /NCQ op 0x[0-9a-fA-F]+/)) op = tolower(substr($0, RSTART + 9, RLENGTH - 9))
            if (match($0, /sectors \[[0-9]+,[0-9]+\]/)) { s = substr($0, RSTART + 9, RLENGTH - 10); split(s, r, ","); a = r[1]; b = r[2] }
            print "NCQ " op " " t " " a " " b; next }
        /ncq_finish/ { if (match($0, /\[tag:[0-9]+\]/)) print "FIN " substr($0, RSTART + 5, RLENGTH - 6); next }
    ' "$trace" >"$WORK/trace.cmds"
    if ! grep -q '^CMD ' "$WORK/trace.cmds"; then
        fail "trace: no ide_exec_cmd line at all in $trace (tracing broken?)"
        return
    fi
    log "trace: $(grep -c '^CMD ' "$WORK/trace.cmds") non-NCQ commands, $(grep -c '^NCQ ' "$WORK/trace.cmds") NCQ commands"
    nfence=$(grep -c '^FENCE ' "$WORK/markers")
    ne5=$(grep -c '^CMD e5$' "$WORK/trace.cmds")
    if [ "$nfence" -lt 10 ] || [ "$nfence" != "$ne5" ]; then
        fail "trace: the guest sent $nfence fences (CHECK POWER MODE on /dev/sg0) but the drive executed $ne5"
        return
    fi
    pass "trace: all $nfence CHECK POWER MODE fences reached the drive"
    rm -f "$WORK"/win-*
    awk -v dir="$WORK" -v markers="$WORK/markers" '
        BEGIN { while ((getline l < markers) > 0) { split(l, f, " "); if (f[1] == "FENCE") name[f[2]] = f[3] }
                k = 0; out = dir "/win-0.boot"; printf "" > out }
        $0 == "CMD e5" { k++; out = dir "/win-" k "." name[k]; printf "" > out; next }
        { print >> out }
    ' "$WORK/trace.cmds"
    win() { cat "$WORK"/win-*."$1" 2>/dev/null; }
    nflush() { grep -cE '^CMD (ea|e7)$' <<<"$1"; }
    # NCQ commands outstanding at the drive at once (issue .. ncq_finish, per tag)
    ncq_peak() { awk '$1 == "NCQ" { if (!($3 in busy)) { busy[$3] = 1; n++ } if (n > max) max = n }
                      $1 == "FIN" { if ($2 in busy) { delete busy[$2]; n-- } }
                      END { print max + 0 }' <<<"$1"; }
    nncq() { grep -c '^NCQ ' <<<"$1"; }

    # the pattern's write reached the drive at LBA $LBA before the flush window's first FLUSH
    have=$(win flush | awk '/^CMD (ea|e7)$/ { exit } { print }')
    if awk -v lo=$LBA -v hi=$((LBA + NSECT - 1)) '$1 == "NCQ" && $2 == "61" && $4 <= lo && $5 >= hi { f = 1 } END { exit !f }' <<<"$have"; then
        pass "trace: the pattern's write (NCQ WRITE FPDMA, sectors $LBA..$((LBA + NSECT - 1))) reached the drive in the flush window, before its FLUSH ($(nncq "$have") NCQ commands written back by the fdatasync)"
    else
        fail "trace: no NCQ write covering sectors $LBA..$((LBA + NSECT - 1)) at the drive between the FLUSH fence and the FLUSH"
    fi
    have=$(win write)
    log "trace: write window (aoectl write + read back): $(nncq "$have") NCQ commands at the drive (plain mode: the write waits in the page cache)"
    have=$(win flush)
    n=$(nflush "$have")
    [ "$n" -ge 1 ] && pass "trace: FLUSH CACHE EXT through AoE reached the drive ($n FLUSH in the flush window)" ||
        fail "trace: no FLUSH CACHE (0xEA/0xE7) at the drive in the flush window"
    have=$(win idle)
    n=$(nflush "$have")
    [ "$n" = 0 ] && pass "trace: no FLUSH at the drive in the idle window (fence, sleep 3, fence; $(nncq "$have") NCQ commands)" ||
        fail "trace: $n FLUSH at the drive in the idle window, where nothing was sent"
    # flushes in the bench windows: the durable modes' group commit must reach the drive, the others none
    for m in $MODES negative; do
        have=$(win "bench-$m")
        n=$(nflush "$have")
        case $m in
            sync|direct-sync)
                [ "$n" -ge 1 ] && pass "trace: bench-$m: $n FLUSH at the drive (--sync group commit reaches the disk)" ||
                    fail "trace: bench-$m: no FLUSH at the drive although the target ran with --sync" ;;
            *)
                [ "$n" = 0 ] && pass "trace: bench-$m: no FLUSH at the drive (not durable mode; $(nncq "$have") NCQ commands)" ||
                    fail "trace: bench-$m: $n FLUSH at the drive, but the target did not run with --sync" ;;
        esac
        [ "$(grep -c '^FUA' <<<"$have")" = 0 ] || log "trace: bench-$m: $(grep -c '^FUA' <<<"$have") NCQ writes with FUA"
        # drive-side concurrency
        n=$(ncq_peak "$have")
        case $m in
            negative) want="= 1"; [ "$n" = 1 ] ;;
            *) want=">= 2"; [ "$n" -ge 2 ] ;;
        esac && pass "trace: bench-$m: at most $n NCQ commands outstanding at the drive at once ($want)" ||
            fail "trace: bench-$m: at most $n NCQ commands outstanding at the drive at once, want $want"
        echo "bench-$m $n" >>"$WORK/ncq-peaks"
    done
}

check_image() {
    local img=$1 offs want i
    if dd if="$img" bs=512 skip=$LBA count=$NSECT status=none | cmp -s - "$WORK/pattern.bin"; then
        pass "image: LBA $LBA..$((LBA + NSECT - 1)) hold the pattern written through AoE"
    else
        fail "image: LBA $LBA..$((LBA + NSECT - 1)) do not hold the pattern ($(dd if="$img" bs=512 skip=$LBA count=1 status=none | head -c 40 | tr -c '[:print:]' .))"
    fi
    dd if="$img" bs=512 skip=$((LBA - 1)) count=1 status=none | cmp -s - "$WORK/guard-before.bin" &&
        dd if="$img" bs=512 skip=$((LBA + NSECT)) count=1 status=none | cmp -s - "$WORK/guard-after.bin" &&
        pass "image: guard sectors $((LBA - 1)) and $((LBA + NSECT)) untouched" ||
        fail "image: a guard sector next to the write changed"
    offs=$(grep -obaF "AOEBD-$NONCE-LBA-" "$img" | cut -d: -f1 | tr '\n' ' ')
    want=$(for ((i = 0; i < NSECT; i++)); do printf '%d ' $(((LBA + i) * 512)); done)
    [ "$offs" = "$want" ] && pass "image: the pattern is nowhere else in the image" ||
        fail "image: pattern found at byte offsets '$offs', expected '$want'"
}

# ---------------------------------------------------------------- main

start=$SECONDS
make_pattern
make_image "$WORK/disk.img"
build_initramfs
mkdir -p "$WORK/cfg/test"
cat >"$WORK/cfg/test/config" <<EOF
BD_TAG='$TAG'
BD_MODEL=$MODEL
BD_SECTORS=$((DISK_MB * 2048))
BD_LBA=$LBA
BD_NSECT=$NSECT
BD_REGION=$REGION
BD_DURATION=$DURATION
BD_SEED=$SEED
BD_NEGATIVE=$NEGATIVE
EOF
guest_cpio_dir "$WORK/cfg" "$WORK/cfg.cpio"
cat "$WORK/base.cpio" "$WORK/cfg.cpio" >"$WORK/initrd"
log "booting guest"
# A second whole disk, virtio-blk with WRITE ZEROES and discard=unmap: the guest writes a 1 MiB pattern at 8 MiB
# and at 16 MiB and TRIMs the first through AoE; the host then finds a hole at 8 MiB in this file, and the
# second copy (so the writes did reach the file).
truncate -s 64M "$WORK/vd.img"
run_guest "$WORK/disk.img" "$WORK/serial.log" "$WORK/trace.log" "$WORK/initrd" "$WORK/vd.img"
rc=$?
rm -f "$WORK/initrd"
log "QEMU exited with $rc after $((SECONDS - start)) s"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    fail "[infra] QEMU timed out after $TIMEOUT s"
    tr -d '\r' <"$WORK/serial.log" | tail -20 | sed 's/^/  serial| /'
elif [ "$rc" != 85 ]; then
    fail "[infra] QEMU exit status $rc, expected 85 (guest leaves through isa-debug-exit)"
fi
check_guest
check_trace "$WORK/trace.log"
check_image "$WORK/disk.img"
# The TRIM through AoE, on the guest's virtio disk, reached this file as a hole (not zeros written); the
# untrimmed copy is data, which is also the control: the same check at 16 MiB fails.
hole_at() { python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
at = int(sys.argv[2]) << 20
sys.exit(0 if os.lseek(fd, at, os.SEEK_HOLE) == at else 1)' "$WORK/vd.img" "$1"; }
data_at() { python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
at = int(sys.argv[2]) << 20
os.lseek(fd, at, os.SEEK_SET)
sys.exit(0 if os.lseek(fd, at, os.SEEK_DATA) == at and any(os.read(fd, 1 << 20)) else 1)' "$WORK/vd.img" "$1"; }
if hole_at 8 && data_at 16 && ! hole_at 16; then
    pass "vd.img: the TRIM of /dev/vda through AoE is a hole in the host's file at 8 MiB; the untrimmed copy at 16 MiB is data"
else
    fail "vd.img: hole at 8 MiB: $(hole_at 8 && echo yes || echo no), data at 16 MiB: $(data_at 16 && echo yes || echo no)"
fi
log "max in flight at /dev/sda (guest sampler, then NCQ at the drive from the trace): $(
    awk '$1 == "INFLIGHT" { printf "%s%s %s", (n++ ? ", " : ""), $2, $3 }' "$WORK/markers") | $(
    awk '{ printf "%s%s %s", (n++ ? ", " : ""), substr($1, 7), $2 }' "$WORK/ncq-peaks" 2>/dev/null)"
log "done in $((SECONDS - start)) s"

if [ "$NEGATIVE" = 1 ]; then
    echo "RESULT: $([ "$FAILED" = 0 ] && echo PASS || echo FAIL) (BD_NEGATIVE=1: wrong setup, a FAIL is the expected outcome)"
    [ "$FAILED" = 0 ] && exit 0 || exit 1
fi
if [ "$FAILED" = 0 ]; then
    echo "RESULT: PASS (whole-disk export of /dev/sda, AHCI, 4 modes + negative control)"
    exit 0
fi
echo "RESULT: FAIL"
exit 1
